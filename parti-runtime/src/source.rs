//! Where the partition catalog comes from: [`PartitionSource`], and [`StaticSource`].
//!
//! Every worker lists the catalog itself (the leader plans with its own listing), so every worker
//! of a cluster must be given the same source. The runtime lists it at start, every
//! `Config::partition_refresh_interval`, and on [`Manager::refresh_partitions`](crate::Manager::refresh_partitions).
//! A listing that fails keeps the last catalog in force and is reported
//! ([`Notification::PartitionSourceFailed`](crate::Notification::PartitionSourceFailed)); the
//! catalog is never emptied because of an error.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::RwLock;
use parti_core::Partition;

use crate::error::SourceError;

/// Lists the partitions to spread over the workers.
///
/// `list` runs on its own task, never on the driver's, so a slow source delays nothing but the
/// catalog change itself. It should return the whole catalog each time, in any order.
///
/// ```
/// use parti_core::Partition;
/// use parti_runtime::{PartitionSource, SourceError};
///
/// /// The queues of a tenant table, weighted by their traffic.
/// struct Tenants;
///
/// #[async_trait::async_trait]
/// impl PartitionSource for Tenants {
///     async fn list(&self) -> Result<Vec<Partition>, SourceError> {
///         let rows = [("acme", 3), ("globex", 1)]; // a database query in real life
///         rows.iter()
///             .map(|(name, weight)| Partition::new([*name], *weight).map_err(SourceError::failed))
///             .collect()
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait PartitionSource: Send + Sync + 'static {
    /// The current catalog.
    async fn list(&self) -> Result<Vec<Partition>, SourceError>;
}

/// A catalog held in memory, changed with [`StaticSource::update`]. A cheap `Clone` handle: every
/// clone is the same catalog, so one can be given to the builder and kept to update it.
///
/// ```
/// use parti_core::Partition;
/// use parti_runtime::StaticSource;
///
/// let source = StaticSource::new((0..8).map(|i| Partition::new([format!("p{i}")], 1).unwrap()));
/// assert_eq!(source.partitions().len(), 8);
/// source.update([Partition::new(["p0"], 1).unwrap()]);
/// assert_eq!(source.partitions().len(), 1);
/// ```
///
/// An update reaches the manager at the next refresh (`Config::partition_refresh_interval`), or
/// at once with [`Manager::refresh_partitions`](crate::Manager::refresh_partitions).
#[derive(Clone, Debug, Default)]
pub struct StaticSource {
    partitions: Arc<RwLock<Arc<[Partition]>>>,
}

impl StaticSource {
    /// A source listing these partitions.
    pub fn new(partitions: impl IntoIterator<Item = Partition>) -> Self {
        StaticSource {
            partitions: Arc::new(RwLock::new(partitions.into_iter().collect())),
        }
    }

    /// `count` partitions named `p0000`, `p0001`, … of weight 1 (the numbers are zero-padded to
    /// four digits so that the names sort in numeric order).
    #[must_use]
    pub fn numbered(count: usize) -> Self {
        Self::new((0..count).map(|i| {
            Partition::new([format!("p{i:04}")], 1)
                .expect("a numbered name is a valid partition key")
        }))
    }

    /// Replaces the catalog.
    pub fn update(&self, partitions: impl IntoIterator<Item = Partition>) {
        *self.partitions.write() = partitions.into_iter().collect();
    }

    /// The current catalog.
    #[must_use]
    pub fn partitions(&self) -> Arc<[Partition]> {
        self.partitions.read().clone()
    }
}

#[async_trait::async_trait]
impl PartitionSource for StaticSource {
    async fn list(&self) -> Result<Vec<Partition>, SourceError> {
        Ok(self.partitions().to_vec())
    }
}

/// Checks a listing and puts it in partition order.
pub(crate) fn catalog(mut partitions: Vec<Partition>) -> Result<Arc<[Partition]>, SourceError> {
    partitions.sort_by(|a, b| a.id().cmp(b.id()));
    let mut seen = BTreeSet::new();
    for p in &partitions {
        if !seen.insert(p.id()) {
            return Err(SourceError::Duplicate(p.id().clone()));
        }
    }
    Ok(partitions.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Partition {
        Partition::new([name], 1).expect("valid")
    }

    #[test]
    fn a_catalog_is_sorted_and_refuses_duplicates() {
        let c = catalog(vec![p("b"), p("a")]).expect("no duplicates");
        assert_eq!(c[0].id(), p("a").id());
        assert_eq!(
            catalog(vec![p("a"), p("b"), p("a")]),
            Err(SourceError::Duplicate(p("a").id().clone()))
        );
    }

    #[tokio::test]
    async fn a_static_source_lists_its_last_update() {
        let s = StaticSource::numbered(3);
        assert_eq!(s.list().await.expect("static").len(), 3);
        s.clone().update([p("x")]);
        assert_eq!(s.list().await.expect("static"), vec![p("x")]);
    }
}
