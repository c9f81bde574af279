//! Vantage's sample store and remote_write shipper.
//!
//! Every sample the probes emit is appended to a [`Store`] under the data directory. Appends
//! are queued in memory and written by a group commit (every `commit_interval` or
//! `commit_samples`, whichever comes first), each commit one sequential write plus one sync:
//! after a power cut the store loses at most the samples of the last commit interval.
//!
//! The store is bounded by bytes and by age (oldest dropped first, drops counted), answers
//! range queries for the local charts, and keeps one cursor per remote_write endpoint so that
//! the [`Shipper`] resumes after a restart where the endpoint last acknowledged.
//!
//! The store sits on a small [`backend::Backend`] interface with two engines: fjall (default)
//! and sled (cargo feature `sled`). `docs/STORE.md` has the measurements behind the choice.

pub mod backend;
pub mod codec;
pub mod config;
pub mod format;
pub mod gauges;
pub mod remote_write;
pub mod rollup;
mod series;
mod store;

pub use backend::BackendKind;
pub use codec::{ErrorKind, StoredPing, StoredSample};
pub use remote_write::{Endpoint, EndpointStats, ScrapeLog, SendMode, Shipper, ShipperOptions};
pub use rollup::{Agg, Dist, HopAgg, Marks, PhaseSum};
pub use series::{Labels, SeriesKey};
pub use store::{
    Cursor, DEFAULT_COMMIT_INTERVAL, DEFAULT_COMMIT_SAMPLES, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PENDING, DropReason, OpenError, ReadBatch, Store, StoreOptions, StoreStats,
    StoredDetail, dir_usage, quarantine_dir,
};
