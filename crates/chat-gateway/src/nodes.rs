//! The chat service nodes behind this gateway: which are healthy, and which
//! one a new socket goes to.
//!
//! A node is healthy until `unhealthy_after` health checks in a row fail,
//! or at once when a connect to it fails or it drops or restarts a relayed
//! socket; one passed check makes it healthy again. A new socket goes to
//! the healthy node relaying the fewest, equal ones taking turns; the
//! unhealthy ones are tried only after every healthy one, so a gateway whose
//! every node looks down still reaches one the moment it is back.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::upstream::ServiceUrl;

pub struct Node {
    pub url: ServiceUrl,
    /// The URL as logs and metrics name the node.
    label: String,
    healthy: AtomicBool,
    /// Health checks failed in a row.
    failures: AtomicU32,
    unhealthy_after: u32,
    /// Sockets relayed to this node, and those being opened on it.
    connections: AtomicUsize,
    healthy_gauge: metrics::Gauge,
    connections_gauge: metrics::Gauge,
}

impl Node {
    fn new(url: ServiceUrl, unhealthy_after: u32) -> Node {
        let label = url.to_string();
        let healthy_gauge = metrics::gauge!("gateway_upstream_healthy", "node" => label.clone());
        let connections_gauge =
            metrics::gauge!("gateway_upstream_connections", "node" => label.clone());
        // Believed healthy until shown otherwise: the first check runs at
        // start, and a failed connect tells sooner.
        healthy_gauge.set(1.0);
        connections_gauge.set(0.0);
        Node {
            url,
            label,
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            unhealthy_after: unhealthy_after.max(1),
            connections: AtomicUsize::new(0),
            healthy_gauge,
            connections_gauge,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn check_passed(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if !self.healthy.swap(true, Ordering::Relaxed) {
            self.healthy_gauge.set(1.0);
            tracing::info!(node = %self.label, "service node healthy again");
        }
    }

    pub fn check_failed(&self, reason: &str) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.unhealthy_after {
            let reason = match failures {
                1 => format!("health check failed: {reason}"),
                _ => format!("{failures} health checks failed in a row, the last: {reason}"),
            };
            self.set_unhealthy(&reason);
        }
    }

    /// A connect failed, or a relayed socket dropped or was restarted: no
    /// need to wait for the checks to agree.
    pub fn mark_unhealthy(&self, reason: &str) {
        self.failures
            .fetch_max(self.unhealthy_after, Ordering::Relaxed);
        self.set_unhealthy(reason);
    }

    fn set_unhealthy(&self, reason: &str) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            self.healthy_gauge.set(0.0);
            tracing::warn!(
                node = %self.label,
                reason,
                "service node unhealthy: new connections go to the others"
            );
        }
    }
}

/// Every node, in the order configured.
pub struct Nodes {
    nodes: Box<[Arc<Node>]>,
    /// Where the next search starts, so that equal nodes take turns.
    turn: AtomicUsize,
    /// Choosing a node and counting the socket on it happen together, so
    /// that simultaneous connects spread out instead of all choosing one.
    choosing: Mutex<()>,
}

impl Nodes {
    pub fn new(urls: Vec<ServiceUrl>, unhealthy_after: u32) -> Nodes {
        Nodes {
            nodes: urls
                .into_iter()
                .map(|url| Arc::new(Node::new(url, unhealthy_after)))
                .collect(),
            turn: AtomicUsize::new(0),
            choosing: Mutex::new(()),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The node a new socket goes to, not one of `tried`: healthy first,
    /// fewest sockets first. The socket counts on it while the lease lives.
    pub fn lease(&self, tried: &[usize]) -> Option<NodeLease> {
        let _choosing = self.choosing.lock().unwrap_or_else(|e| e.into_inner());
        let (index, node) = self.in_turn(tried).min_by_key(|(_, node)| {
            (!node.is_healthy(), node.connections.load(Ordering::Relaxed))
        })?;
        let open = node.connections.fetch_add(1, Ordering::Relaxed) + 1;
        node.connections_gauge.set(open as f64);
        Some(NodeLease {
            node: node.clone(),
            index,
        })
    }

    /// A node for a stateless request, not one of `tried`: any healthy one,
    /// in turn; an unhealthy one only when no healthy one is left.
    pub fn any(&self, tried: &[usize]) -> Option<(usize, &Arc<Node>)> {
        self.in_turn(tried)
            .min_by_key(|(_, node)| !node.is_healthy())
    }

    /// Untried nodes, starting one further each call (`min_by_key` keeps
    /// the first of equals, so the start decides ties).
    fn in_turn<'s, 't>(
        &'s self,
        tried: &'t [usize],
    ) -> impl Iterator<Item = (usize, &'s Arc<Node>)> + use<'s, 't> {
        let count = self.nodes.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(move |step| (start.wrapping_add(step)) % count)
            .filter(|index| !tried.contains(index))
            .map(|index| (index, &self.nodes[index]))
    }
}

/// One socket counted on its node; dropping it uncounts it.
pub struct NodeLease {
    node: Arc<Node>,
    index: usize,
}

impl NodeLease {
    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        let open = self.node.connections.fetch_sub(1, Ordering::Relaxed) - 1;
        self.node.connections_gauge.set(open as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(count: u16) -> Nodes {
        let urls = (0..count)
            .map(|n| ServiceUrl::parse(&format!("http://127.0.0.1:{}", 40000 + n)).unwrap())
            .collect();
        Nodes::new(urls, 2)
    }

    #[test]
    fn sockets_spread_by_fewest_connections() {
        let nodes = nodes(3);
        let leases: Vec<_> = (0..6).map(|_| nodes.lease(&[]).unwrap()).collect();
        let mut per_node = [0; 3];
        for lease in &leases {
            per_node[lease.index()] += 1;
        }
        assert_eq!(per_node, [2, 2, 2]);
        // Dropped leases are uncounted: the nodes fill up evenly again.
        drop(leases);
        let _again: Vec<_> = (0..3).map(|_| nodes.lease(&[]).unwrap()).collect();
        let counts: Vec<usize> = nodes
            .iter()
            .map(|n| n.connections.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [1, 1, 1]);
    }

    #[test]
    fn unhealthy_nodes_come_last_and_tried_ones_never() {
        let nodes = nodes(3);
        nodes.nodes[1].mark_unhealthy("test");
        let picked: Vec<usize> = (0..4)
            .map(|_| {
                let lease = nodes.lease(&[]).unwrap();
                let index = lease.index();
                std::mem::forget(lease);
                index
            })
            .collect();
        assert!(!picked.contains(&1), "{picked:?}");
        // Only when every healthy node was tried does the unhealthy one get a turn.
        assert_eq!(nodes.lease(&[0, 2]).unwrap().index(), 1);
        assert!(nodes.lease(&[0, 1, 2]).is_none());
        assert_eq!(nodes.any(&[0, 2]).unwrap().0, 1);
        assert_ne!(nodes.any(&[]).unwrap().0, 1);
    }

    #[test]
    fn health_follows_checks() {
        let nodes = nodes(1);
        let node = &nodes.nodes[0];
        node.check_failed("timeout");
        assert!(node.is_healthy(), "one failure is not enough");
        node.check_failed("timeout");
        assert!(!node.is_healthy());
        node.check_passed();
        assert!(node.is_healthy());
        node.check_failed("timeout");
        assert!(node.is_healthy(), "a pass resets the count");
        node.mark_unhealthy("connect refused");
        assert!(!node.is_healthy());
    }
}
