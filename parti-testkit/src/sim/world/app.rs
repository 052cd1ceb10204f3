//! The application model (what each process believes it owns, handler latency) and the
//! member notifications the simulator acts on.

use std::collections::BTreeSet;
use std::time::Duration;

use parti_core::member::{DeliveryId, Event, Notification};
use parti_core::planner::PlannerNotification;
use parti_core::records::OwnedPartition;
use parti_core::{Fence, PartitionId, WorkerId};

use super::{Delivery, Ev, Status, World, describe_node, dur_ns};

impl World {
    // ----- the application model ---------------------------------------------------------------

    pub(super) fn handler_latency(&mut self, n: usize) -> Duration {
        if self.now < self.nodes[n].slow_handlers_until {
            // A slow application (the `SlowHandlers` fault): still within `handler_timeout`, so
            // the member waits for it and the partitions stay held meanwhile.
            let max = self.nodes[n].slow_handler_max;
            return self.between(max / 2, max);
        }
        let max = self.settings.handler_latency;
        if self.chance(100) {
            self.between(Duration::ZERO, max)
        } else {
            self.between(Duration::ZERO, max / 10)
        }
    }

    pub(super) fn deliver(
        &mut self,
        n: usize,
        id: DeliveryId,
        revoked: Vec<OwnedPartition>,
        assigned: Vec<OwnedPartition>,
    ) {
        self.trace.mix(&[
            6,
            n as u64,
            id.0,
            revoked.len() as u64,
            assigned.len() as u64,
        ]);
        self.trace.line(self.now, Some(n), || {
            format!(
                "deliver #{} revoke {:?} assign {:?}",
                id.0,
                revoked
                    .iter()
                    .map(|o| o.partition.id().to_string())
                    .collect::<Vec<_>>(),
                assigned
                    .iter()
                    .map(|o| format!(
                        "{}@{}.{}",
                        o.partition.id(),
                        o.fence.term.0,
                        o.fence.version.0
                    ))
                    .collect::<Vec<_>>()
            )
        });
        let worker = self.nodes[n].member.worker_id().cloned();
        self.nodes[n].app.queue.push_back(Delivery {
            id,
            revoked,
            assigned,
            worker,
            applied: false,
        });
        if self.nodes[n].app.running.is_none() {
            self.start_delivery(n);
        }
    }

    pub(super) fn start_delivery(&mut self, n: usize) {
        let Some(d) = self.nodes[n].app.queue.pop_front() else {
            return;
        };
        let id = d.id;
        let lat = if d.revoked.is_empty() {
            Duration::ZERO
        } else {
            self.handler_latency(n)
        };
        self.nodes[n].app.running = Some(d);
        self.schedule(
            self.now + lat,
            Ev::AppRevoked {
                node: n,
                delivery: id,
            },
        );
    }

    pub(super) fn on_app_revoked(&mut self, n: usize, delivery: DeliveryId) {
        match self.nodes[n].status {
            Status::Running => {}
            Status::Paused => {
                self.nodes[n]
                    .deferred
                    .push(Ev::AppRevoked { node: n, delivery });
                return;
            }
            _ => return,
        }
        let Some(d) = self.nodes[n].app.running.as_mut() else {
            return;
        };
        if d.id != delivery {
            return;
        }
        d.applied = true;
        let revoked: Vec<PartitionId> =
            d.revoked.iter().map(|o| o.partition.id().clone()).collect();
        let assigned = d.assigned.clone();
        let worker = d.worker.clone();
        for p in &revoked {
            self.lose(n, p);
        }
        for o in assigned {
            self.gain(n, worker.as_ref(), o.partition.id(), o.fence);
        }
        let lat = if self.nodes[n]
            .app
            .running
            .as_ref()
            .is_some_and(|d| d.assigned.is_empty())
        {
            Duration::ZERO
        } else {
            self.handler_latency(n)
        };
        self.schedule(self.now + lat, Ev::AppDone { node: n, delivery });
    }

    pub(super) fn on_app_done(&mut self, n: usize, delivery: DeliveryId) {
        match self.nodes[n].status {
            Status::Running => {}
            Status::Paused => {
                self.nodes[n]
                    .deferred
                    .push(Ev::AppDone { node: n, delivery });
                return;
            }
            _ => return,
        }
        if self.nodes[n].app.running.as_ref().map(|d| d.id) != Some(delivery) {
            return;
        }
        self.nodes[n].app.running = None;
        self.trace.mix(&[7, n as u64, delivery.0, dur_ns(self.now)]);
        self.input(n, |m, now| {
            m.handle_event(now, Event::Delivered { delivery })
        });
        if self.nodes[n].app.running.is_none() && self.nodes[n].status == Status::Running {
            self.start_delivery(n);
        }
    }

    pub(super) fn gain(
        &mut self,
        n: usize,
        worker: Option<&WorkerId>,
        p: &PartitionId,
        fence: Fence,
    ) {
        self.nodes[n].app.held.insert(p.clone(), fence);
        let now = self.now;
        let nodes = &self.nodes;
        let v1 = self.checks.exclusive.gain(
            now,
            n,
            p,
            |m| nodes[m].status == Status::Running,
            |m| describe_node(nodes, m),
        );
        let v2 = worker.and_then(|w| self.checks.monotonic.granted(now, n, w, p, fence));
        self.checks.reaction.owned(now, n, p);
        for v in [v1, v2].into_iter().flatten() {
            self.violation(v);
        }
    }

    pub(super) fn lose(&mut self, n: usize, p: &PartitionId) {
        self.nodes[n].app.held.remove(p);
        self.checks.exclusive.lose(n, p);
    }

    // ----- notifications -----------------------------------------------------------------------

    pub(super) fn notification(&mut self, n: usize, note: Notification) {
        match &note {
            Notification::OwnershipLost { partitions } => {
                let ids: BTreeSet<PartitionId> = partitions
                    .iter()
                    .map(|o| o.partition.id().clone())
                    .collect();
                for p in &ids {
                    self.lose(n, p);
                }
                if let Some(d) = self.nodes[n].app.running.as_mut()
                    && !d.applied
                {
                    d.assigned.retain(|o| !ids.contains(o.partition.id()));
                }
            }
            Notification::LeadershipAcquired { .. } => self.stats.leaderships += 1,
            Notification::Planner(PlannerNotification::StateChanged { to, .. }) => {
                self.nodes[n].planner_state = Some(*to);
            }
            Notification::Planner(PlannerNotification::Published { .. }) => {
                self.stats.publications += 1;
                self.published.push((self.now, n));
            }
            Notification::Planner(PlannerNotification::PlanStarted { moved, .. }) => {
                self.stats.moved += *moved as u64;
            }
            Notification::Planner(PlannerNotification::HandoffStalled { .. }) => {
                self.stats.stalls += 1;
            }
            Notification::Planner(PlannerNotification::WorkerDead { worker }) => {
                self.stats.deaths += 1;
                // A running, connected process under that id (fenced or not: it is alive and
                // will be re-granted; declaring it dead is an emergency for nothing).
                let alive = self.nodes.iter().enumerate().any(|(i, x)| {
                    x.status == Status::Running
                        && self.is_connected(i)
                        && x.member.worker_id() == Some(worker)
                });
                if alive {
                    self.stats.false_deaths += 1;
                }
                self.deaths.push((self.now, worker.clone(), alive));
            }
            _ => {}
        }
        if self.trace.is_on() {
            self.trace
                .line(self.now, Some(n), || format!("note {note:?}"));
        }
    }
}
