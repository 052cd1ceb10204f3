//! The chaos phase: faults and workload drawn from the seed.
//!
//! Every kind of fault of the issue is drawn here, each at a time and with a size chosen by the
//! world's generator; the target process is resolved when the event happens (whoever runs then).
//! Faults overlap freely.

use std::time::Duration;

use super::world::{Control, Pick, World};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Schedules chaos events in `[from, until)`; every ~`gap` on average.
pub(crate) fn schedule(
    w: &mut World,
    from: Duration,
    until: Duration,
    gap: Duration,
    max_members: usize,
) {
    let buckets = [
        w.names().ids_bucket(),
        w.names().heartbeats_bucket(),
        w.names().leader_bucket(),
        w.names().assignments_bucket(),
    ];
    let election = w.config.election_ttl;
    let mut t = from;
    let mut planned_members = 0usize;
    loop {
        t += w.between(gap / 4, gap * 7 / 4);
        if t >= until {
            break;
        }
        let roll = w.rng.below(100);
        let c = match roll {
            0..=9 => {
                let restart = if w.chance(600) {
                    let after = w.between(ms(50), ms(3000));
                    Some((after, w.chance(500)))
                } else {
                    None
                };
                Control::Crash(Pick::Random, restart)
            }
            10..=19 => {
                let d = if w.chance(500) {
                    w.between(ms(10), ms(400))
                } else {
                    w.between(ms(400), ms(3000))
                };
                Control::Pause(Pick::Random, d)
            }
            20..=24 => {
                let d = w.between(election / 2, election * 3 / 2);
                Control::Pause(Pick::Leader, d)
            }
            25..=31 => Control::Outage(w.between(ms(100), ms(3000))),
            32..=36 => Control::Cut(Pick::Random, w.between(ms(100), ms(4000))),
            37..=41 => Control::Cut(Pick::Leader, w.between(election, election * 4)),
            42..=48 => {
                let b = buckets[w.rng.below(4) as usize].clone();
                Control::Stall(b, w.between(ms(200), ms(3000)))
            }
            49..=51 => Control::SlowHandlers(
                Pick::Random,
                w.between(ms(200), w.config.handler_timeout),
                w.between(ms(1000), ms(5000)),
            ),
            52..=55 => {
                let who = if w.chance(500) {
                    None
                } else {
                    Some(Pick::Random)
                };
                Control::Slow(
                    who,
                    w.between(ms(50), ms(900)),
                    w.between(ms(500), ms(4000)),
                )
            }
            56..=61 => {
                Control::WatchDelay(w.between(ms(20), ms(800)), w.between(ms(500), ms(4000)))
            }
            62..=66 => Control::Errors(50 + w.rng.below(400), w.between(ms(200), ms(2000))),
            67 => Control::Resync,
            68 => Control::LateWrite(30),
            69..=70 => Control::EndWatch,
            71..=80 => {
                planned_members += 1;
                if planned_members > max_members {
                    continue;
                }
                let p = if w.chance(500) {
                    Some(w.rng.below(u64::try_from(max_members).unwrap_or(8)) as u32)
                } else {
                    None
                };
                Control::Start(p)
            }
            81..=86 => Control::Leave(Pick::Random),
            87..=92 => Control::Restart(Pick::Random),
            93..=96 => Control::Catalog,
            _ => Control::Weights,
        };
        w.control_at(t, c);
    }
}
