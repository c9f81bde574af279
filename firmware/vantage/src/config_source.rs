//! Where the config comes from: `--config`, the data directory's file (with an optional
//! packaged default), or the embedded config.

use std::path::PathBuf;

use vantage_core::{Config, ConfigErrors};

/// Name of the config file the page creates in the data directory when the daemon runs
/// without `--config`.
pub const CONFIG_FILE_NAME: &str = "vantage.toml";
/// The config a device runs when none is given: pings loopback, so it works anywhere.
pub const EMBEDDED_CONFIG: &str = include_str!("../vantage.toml");

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
    /// No `--config`: the file the web page saves in the data directory; until the first save
    /// creates it, `default` (the packaged `/etc/vantage/vantage.toml`) if given and present,
    /// else the embedded config.
    DataDir {
        path: PathBuf,
        default: Option<PathBuf>,
    },
}

impl ConfigSource {
    /// What runs when nothing has been saved in the data directory yet: a file or the
    /// embedded config.
    pub fn fallback(default: &Option<PathBuf>) -> ConfigSource {
        match default {
            Some(d) if d.exists() => ConfigSource::File(d.clone()),
            _ => ConfigSource::Embedded,
        }
    }

    /// The source that is in effect now, with the data directory's fallback resolved.
    pub fn current(&self) -> ConfigSource {
        match self {
            ConfigSource::DataDir { path, .. } if path.exists() => ConfigSource::File(path.clone()),
            ConfigSource::DataDir { default, .. } => Self::fallback(default),
            other => other.clone(),
        }
    }

    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match self.current() {
            ConfigSource::File(p) => crate::config::load(&p),
            _ => crate::config::parse(EMBEDDED_CONFIG, "<embedded default config>"),
        }
    }

    pub fn describe(&self) -> String {
        let shown = match self.current() {
            ConfigSource::File(p) => p.display().to_string(),
            _ => "the embedded default config".into(),
        };
        match self {
            ConfigSource::DataDir { path, .. } if !path.exists() => {
                format!("{shown} (the web page saves to {})", path.display())
            }
            _ => shown,
        }
    }
}

/// How a command picks its config: `--config`, or the data directory's file with an optional
/// packaged default. Shared by `run` and `leds` so both see the same config.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Config file (TOML), used as is; the web page saves its edits to it. Without it: the file
    /// the web page saves in the data directory, or until then --default-config, or the
    /// embedded default config (which pings 127.0.0.1 and ::1).
    #[arg(
        long,
        short = 'c',
        env = "VANTAGE_CONFIG",
        conflicts_with = "default_config"
    )]
    pub config: Option<PathBuf>,
    /// The config to run until the web page saves one in the data directory: the packaged
    /// /etc/vantage/vantage.toml. The embedded default config if the file does not exist.
    #[arg(long, env = "VANTAGE_DEFAULT_CONFIG", value_name = "FILE")]
    pub default_config: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn source(self, data_dir: Option<&std::path::Path>) -> ConfigSource {
        match (self.config, data_dir) {
            (Some(p), _) => ConfigSource::File(p),
            (None, Some(dir)) => ConfigSource::DataDir {
                path: dir.join(CONFIG_FILE_NAME),
                default: self.default_config,
            },
            (None, None) => ConfigSource::fallback(&self.default_config),
        }
    }
}
