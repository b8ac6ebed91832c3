//! What the simulator's test files share: an HTTP client and a running simulator.

use std::time::Duration;

use attentive_sim::{RunningSim, SimConfig, Simulator};

/// An HTTP client for the simulator on loopback (no proxy, 20 s timeout).
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

/// A simulator serving `config` on a free loopback port.
pub(crate) async fn start(config: SimConfig) -> RunningSim {
    Simulator::start(config).await.expect("start the simulator")
}
