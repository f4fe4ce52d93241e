use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::Calls;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::sequencer::Sequencer;
use crate::store::{HistoryPage, Store, StoreError};

/// Everything the HTTP handlers and connections share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// Membership and connections of this process.
    pub(crate) hub: Arc<Hub>,
    /// How every frame reaches its connections.
    pub(crate) bus: Arc<dyn Delivery>,
    pub(crate) store: Store,
    pub(crate) presence: Arc<Presence>,
    /// In cluster mode, the node's view of the cluster.
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) sequencer: Sequencer,
    pub(crate) calls: Arc<Calls>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) prometheus: PrometheusHandle,
    /// Cancelled when the service starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) connections: TaskTracker,
    /// The file store, when one is configured.
    pub(crate) files: Option<crate::files::Files>,
}

impl Shared {
    /// A page of history for a client, socket or HTTP: at most `limit`
    /// messages and about `page_bytes` of them, so no page can outgrow what
    /// a connection can carry; a page cut short says `has_more`.
    pub(crate) async fn history_page(
        &self,
        room: &chat_proto::RoomId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        let mut page = self.store.page(room, before, limit).await?;
        if chat_proto::server::keep_newest_within(&mut page.messages, self.config.limits.page_bytes)
        {
            page.has_more = true;
        }
        Ok(page)
    }
}
