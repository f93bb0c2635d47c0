//! `keelson-chaos`: fault-injection campaigns against real master processes.
//!
//! The campaign runner (fault schedules, workloads, checkers, reports) is not built yet; the
//! library (`keelson_chaos::cluster`, `keelson_chaos::client`) already drives the integration
//! tests.

fn main() {
    eprintln!("keelson-chaos: campaigns are not implemented yet (see docs/chaos.md); the harness library drives tests/quorum.rs");
    std::process::exit(2);
}
