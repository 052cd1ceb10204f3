//! The event queue: every future happening, ordered by `(time, seq)`.
//!
//! `seq` is a counter taken when an event is pushed, so two events due at the same instant run
//! in the order they were scheduled: the order is a function of the seed alone.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// A min-heap of `(time, seq, item)`.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    at: Duration,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    pub(crate) fn push(&mut self, at: Duration, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
    }

    /// The time of the next event.
    pub(crate) fn peek_time(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    pub(crate) fn pop(&mut self) -> Option<(Duration, T)> {
        self.heap.pop().map(|Reverse(e)| (e.at, e.item))
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_then_insertion_order() {
        let mut q = Queue::new();
        q.push(Duration::from_millis(5), "b");
        q.push(Duration::from_millis(1), "a");
        q.push(Duration::from_millis(5), "c");
        assert_eq!(q.pop().map(|x| x.1), Some("a"));
        assert_eq!(q.pop().map(|x| x.1), Some("b"));
        assert_eq!(q.pop().map(|x| x.1), Some("c"));
        assert!(q.pop().is_none());
    }
}
