//! The TCP probe against a filtered port: a network namespace whose iptables drops the SYNs
//! (root). Kept out of the library's unit tests so that those link without the testkit's
//! netfilter library (they also run cross-compiled under qemu-user).

use std::time::{Duration, Instant};

use vantage_core::{Config, MODULES, Measurement, ProbeError, ProbeRequest};

#[test]
fn filtered_port_times_out() {
    if !vantage_testkit::root_or_skip("filtered_port_times_out") {
        return;
    }
    let ns = vantage_testkit::Netns::new("tcpdrop");
    ns.iptables(&["-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"]);
    let text = "[[targets]]\nname = \"t\"\nhost = \"127.0.0.1\"\nprobes = [\"tcp\"]\n\
                tcp = { port = 9, attempts = 2, timeout = \"300ms\" }\n";
    let target = Config::parse(text, "t.toml").unwrap().targets.remove(0);
    let probe = MODULES
        .iter()
        .find(|m| m.name() == "tcp")
        .expect("the tcp module is registered")
        .probe();
    let (s, took) = ns.block_on(|| async move {
        let started = Instant::now();
        let s = probe.run(ProbeRequest::for_target(&target)).await;
        (s, started.elapsed())
    });
    assert!(!s.success);
    assert_eq!(s.error, Some(ProbeError::Timeout));
    let Measurement::Module(m) = &s.measurement else {
        panic!("{s:?}");
    };
    let r = m.report.json();
    assert_eq!(
        (r["sent"].as_u64(), r["connected"].as_u64()),
        (Some(2), Some(0))
    );
    // The SYNs were dropped, not refused; the round ended at its timeout, not the kernel's.
    assert!(ns.rule_packets(false, "INPUT") >= 2);
    assert!(took < Duration::from_secs(20), "{took:?}");
}
