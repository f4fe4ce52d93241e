use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::sequencer::Sequencer;
use crate::store::Store;

/// Everything the HTTP handlers and connections share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) hub: Arc<Hub>,
    pub(crate) store: Store,
    pub(crate) sequencer: Sequencer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) prometheus: PrometheusHandle,
    /// Cancelled when the service starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) connections: TaskTracker,
    /// Caps concurrent connections; a permit lives as long as its connection.
    pub(crate) connection_permits: Arc<Semaphore>,
}
