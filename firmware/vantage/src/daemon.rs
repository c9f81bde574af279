//! `vantage run`: loads the config, builds the device's parts, starts the background loops
//! (fleet, LEDs, SIGHUP) and serves HTTP until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use vantage_core::Observer;
use vantage_leds::{Health, Notifier, Pattern, Supervisor};

use crate::apply::{Applier, Wiring};
use crate::config_source::ConfigSource;
use crate::fleet::{provisioning, uplink};
use crate::state::{AppState, Reload};
use crate::storage::Storage;

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(
    source: ConfigSource,
    listen: SocketAddr,
    data_dir: PathBuf,
    setup_code_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = source.load().map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let listener = bind(listen).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source.describe(),
        listen = %listener.local_addr()?,
        data_dir = %data_dir.display(),
        "vantage starting"
    );
    let storage = Storage::start(&data_dir, &config);
    let history = crate::web::memory_history(Some(&storage));
    let wiring = Wiring {
        data_dir: Some(data_dir.clone()),
        announce_port: Some(listener.local_addr()?.port()),
        observers: vec![history.clone() as Arc<dyn Observer>],
        storage: Some(storage.clone()),
    };
    let built = crate::apply::build(source, config, wiring);
    spawn_fleet(&built.state, &built.applier);
    let history_source = crate::web::history_source(history, Some(&storage));
    let code = setup_code_file.as_deref();
    let web = crate::web::Web::open(built.state.clone(), &data_dir, history_source, code)?;
    spawn_fleet_update(&built.state, &built.applier, &web, &data_dir);
    let _ = crate::web::apply_https(&web).await;

    // The LED tick is the main loop's heartbeat: it runs on the same runtime as everything
    // else, so a wedged runtime stops it, the LEDs say "not responding" and, with
    // WatchdogSec=, systemd restarts the daemon.
    let notifier = Notifier::from_env().map(Arc::new);
    if let Some(w) = notifier.as_ref().and_then(|n| n.watchdog_timeout()) {
        tracing::info!(timeout = %humantime::format_duration(w), "systemd watchdog on");
    }
    let supervisor = Supervisor {
        leds: built.state.leds.clone(),
        health: built.health.clone(),
        notifier: notifier.clone(),
    };
    if let Some(n) = &notifier {
        let _ = n.ready();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ticker = tokio::spawn(supervisor.run(|| true, stop_rx));
    spawn_led_inputs(storage.clone(), built.health.clone());
    spawn_sighup(built.applier.clone());

    // Not axum::serve: it has no header read timeout (slowloris); see web/server.rs.
    crate::web::serve_http(listener, crate::web::app(web), shutdown_signal()).await;
    built.applier.withdraw();
    if let Some(n) = &notifier {
        let _ = n.stopping();
    }
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    // Pending samples reach the disk before the process goes.
    storage.shutdown().await;
    // A defined state for the LEDs: dark, with the kernel's triggers off.
    built.state.leds.shutdown(Pattern::Off);
    tracing::info!("vantage stopped");
    Ok(())
}

/// The fleet loops: uplink probing and provisioning, both following the device's own config;
/// changed provisioned targets come back here to be applied.
fn spawn_fleet(state: &AppState, applier: &Arc<Applier>) {
    let uplink = uplink::UplinkMetrics::new(state.metrics.registry());
    tokio::spawn(uplink::run(applier.local(), uplink));
    let (reapply, mut reapplies) = tokio::sync::mpsc::channel(1);
    let fetches = provisioning::run(applier.local(), reapply, state.provisioning.clone());
    tokio::spawn(fetches);
    let applier = applier.clone();
    tokio::spawn(async move {
        while reapplies.recv().await.is_some() {
            applier.reapply();
        }
    });
}

/// Fleet updates: the provisioned file's `[update]` (else the device's own), in its window.
fn spawn_fleet_update(
    state: &AppState,
    applier: &Arc<Applier>,
    web: &crate::web::Web,
    data_dir: &std::path::Path,
) {
    use crate::fleet::config::FleetSections;
    use crate::update::fleet::{ATTEMPTED_FILE, Fleet, HttpsFetch, REBOOT_REQUEST_FILE};
    use crate::update::offer::UpdateOffered;
    let (prov, local) = (state.provisioning.clone(), applier.local());
    let ca_local = local.clone();
    let fleet = Fleet {
        updater: web.update.clone(),
        clock: Arc::new(vantage_core::SystemClock),
        fetch: HttpsFetch {
            ca_file: Box::new(move || {
                let c = ca_local.borrow();
                c.provisioning().and_then(|p| p.ca_file.clone())
            }),
        },
        offer: Box::new(move || {
            prov.offered_update()
                .or_else(|| local.borrow().update_offer().cloned())
        }),
        running: env!("CARGO_PKG_VERSION").to_string(),
        attempted: data_dir.join(ATTEMPTED_FILE),
        reboot_request: data_dir.join(REBOOT_REQUEST_FILE),
    };
    tokio::spawn(fleet.run());
}

/// Shipping and store state for the LEDs; once a second is as fast as a person looks.
fn spawn_led_inputs(storage: Arc<Storage>, health: Arc<Health>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let (uplink, store) = storage.led_inputs();
            health.set_uplink(uplink);
            health.set_store(store);
        }
    });
}

/// SIGHUP reloads the config.
fn spawn_sighup(applier: Arc<Applier>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading config");
            let _ = applier.reload();
        }
    });
}

async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(listen).await {
        Ok(l) => Ok(l),
        // A machine without IPv6 cannot bind [::]; the same port on 0.0.0.0 serves it.
        Err(e) if listen.ip().is_unspecified() && listen.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], listen.port()));
            tracing::warn!("cannot listen on {listen} ({e}); using {v4}");
            TcpListener::bind(v4)
                .await
                .with_context(|| format!("cannot listen on {v4}"))
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {listen}")),
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
