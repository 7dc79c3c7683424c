//! The batching policy, free of threads and clocks so that it can be tested directly.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

/// What the queue needs to know about a waiting job.
pub trait Pending {
    fn rows(&self) -> usize;
    /// True once the client has gone away; such jobs are dropped, not run.
    fn is_cancelled(&self) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    pub queued: usize,
    pub capacity: usize,
}

/// What a free inference thread should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Take a batch now.
    Run,
    /// Wait this long for more rows, unless woken earlier.
    WaitFor(Duration),
    /// Nothing queued: sleep until woken.
    Idle,
    /// Closed and drained: the thread may exit.
    Stop,
}

#[derive(Debug)]
pub struct State<J> {
    queue: VecDeque<(J, Instant)>,
    queued_rows: usize,
    max_batch_rows: usize,
    capacity_rows: usize,
    max_delay: Duration,
    closed: bool,
}

impl<J: Pending> State<J> {
    pub fn new(max_batch_rows: usize, capacity_rows: usize, max_delay: Duration) -> Self {
        assert!(max_batch_rows > 0 && capacity_rows >= max_batch_rows, "checked by Config::check");
        Self { queue: VecDeque::new(), queued_rows: 0, max_batch_rows, capacity_rows, max_delay, closed: false }
    }

    pub fn queued_rows(&self) -> usize {
        self.queued_rows
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Admits all of one request's jobs or none of them, so that a request is never half-queued.
    pub fn push_all(&mut self, jobs: Vec<J>, now: Instant) -> Result<(), QueueFull> {
        let rows: usize = jobs.iter().map(Pending::rows).sum();
        if self.queued_rows + rows > self.capacity_rows {
            return Err(QueueFull { queued: self.queued_rows, capacity: self.capacity_rows });
        }
        debug_assert!(jobs.iter().all(|j| j.rows() <= self.max_batch_rows), "jobs are split before queueing");
        self.queued_rows += rows;
        self.queue.extend(jobs.into_iter().map(|j| (j, now)));
        Ok(())
    }

    /// Stops admission; queued jobs are still handed out until the queue is empty.
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn next(&self, now: Instant) -> Next {
        let Some((_, oldest)) = self.queue.front() else {
            return if self.closed { Next::Stop } else { Next::Idle };
        };
        if self.closed || self.queued_rows >= self.max_batch_rows {
            return Next::Run;
        }
        let waited = now.saturating_duration_since(*oldest);
        if waited >= self.max_delay {
            Next::Run
        } else {
            Next::WaitFor(self.max_delay - waited)
        }
    }

    /// Takes jobs in arrival order while they fit in one batch, skipping cancelled ones. Returns
    /// the batch with each job's time in the queue, and how many rows of cancelled jobs were dropped.
    pub fn take_batch(&mut self, now: Instant) -> (Vec<(J, Duration)>, usize) {
        let mut batch = Vec::new();
        let mut rows = 0;
        let mut dropped = 0;
        while let Some((job, _)) = self.queue.front() {
            if job.is_cancelled() {
                let (job, _) = self.queue.pop_front().expect("front exists");
                self.queued_rows -= job.rows();
                dropped += job.rows();
                continue;
            }
            if rows + job.rows() > self.max_batch_rows {
                break;
            }
            let (job, since) = self.queue.pop_front().expect("front exists");
            rows += job.rows();
            self.queued_rows -= job.rows();
            batch.push((job, now.saturating_duration_since(since)));
        }
        (batch, dropped)
    }
}

/// Splits `rows` into consecutive ranges of at most `max` rows.
pub fn split(rows: usize, max: usize) -> Vec<Range<usize>> {
    (0..rows).step_by(max).map(|start| start..(start + max).min(rows)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct Job {
        id: u32,
        rows: usize,
        cancelled: Cell<bool>,
    }

    impl Pending for Job {
        fn rows(&self) -> usize {
            self.rows
        }
        fn is_cancelled(&self) -> bool {
            self.cancelled.get()
        }
    }

    fn job(id: u32, rows: usize) -> Job {
        Job { id, rows, cancelled: Cell::new(false) }
    }

    fn ids(batch: &[(Job, Duration)]) -> Vec<u32> {
        batch.iter().map(|(j, _)| j.id).collect()
    }

    #[test]
    fn merges_waiting_jobs_up_to_the_row_limit_in_order() {
        let t = Instant::now();
        let mut s = State::new(8, 100, Duration::ZERO);
        s.push_all(vec![job(1, 3)], t).unwrap();
        s.push_all(vec![job(2, 4)], t).unwrap();
        s.push_all(vec![job(3, 2)], t).unwrap();
        assert_eq!(s.next(t), Next::Run);
        let (batch, dropped) = s.take_batch(t);
        assert_eq!((ids(&batch), dropped), (vec![1, 2], 0));
        assert_eq!(s.queued_rows(), 2);
        let (batch, _) = s.take_batch(t);
        assert_eq!(ids(&batch), vec![3]);
        assert_eq!(s.next(t), Next::Idle);
    }

    #[test]
    fn a_lone_job_runs_at_once_without_a_delay() {
        let t = Instant::now();
        let mut s = State::new(64, 100, Duration::ZERO);
        s.push_all(vec![job(1, 1)], t).unwrap();
        assert_eq!(s.next(t), Next::Run);
    }

    #[test]
    fn with_a_delay_waits_until_full_or_timed_out() {
        let t = Instant::now();
        let mut s = State::new(4, 100, Duration::from_millis(10));
        s.push_all(vec![job(1, 1)], t).unwrap();
        assert_eq!(s.next(t + Duration::from_millis(4)), Next::WaitFor(Duration::from_millis(6)));
        assert_eq!(s.next(t + Duration::from_millis(10)), Next::Run);
        s.push_all(vec![job(2, 3)], t).unwrap();
        assert_eq!(s.next(t), Next::Run, "a full batch does not wait");
    }

    #[test]
    fn cancelled_clients_are_skipped_and_their_rows_freed() {
        let t = Instant::now();
        let mut s = State::new(8, 100, Duration::ZERO);
        s.push_all(vec![job(1, 5), job(2, 5), job(3, 1)], t).unwrap();
        s.queue[0].0.cancelled.set(true);
        let (batch, dropped) = s.take_batch(t);
        assert_eq!((ids(&batch), dropped), (vec![2, 3], 5), "job 1's five rows were dropped");
        assert_eq!(s.queued_rows(), 0);
    }

    #[test]
    fn full_queue_refuses_the_whole_request() {
        let t = Instant::now();
        let mut s = State::new(4, 10, Duration::ZERO);
        s.push_all(vec![job(1, 4), job(2, 4)], t).unwrap();
        let err = s.push_all(vec![job(3, 2), job(4, 1)], t).unwrap_err();
        assert_eq!(err, QueueFull { queued: 8, capacity: 10 });
        assert_eq!(s.queued_rows(), 8, "nothing of the refused request was queued");
        s.push_all(vec![job(5, 2)], t).unwrap();
    }

    #[test]
    fn closing_drains_then_stops() {
        let t = Instant::now();
        let mut s = State::new(4, 10, Duration::from_secs(60));
        s.push_all(vec![job(1, 1)], t).unwrap();
        s.close();
        assert_eq!(s.next(t), Next::Run, "a closing queue does not wait for fuller batches");
        s.take_batch(t);
        assert_eq!(s.next(t), Next::Stop);
    }

    #[test]
    fn queue_time_is_reported_per_job() {
        let t = Instant::now();
        let mut s = State::new(4, 10, Duration::ZERO);
        s.push_all(vec![job(1, 1)], t).unwrap();
        let (batch, _) = s.take_batch(t + Duration::from_millis(3));
        assert_eq!(batch[0].1, Duration::from_millis(3));
    }

    #[test]
    fn split_covers_every_row_in_order() {
        assert_eq!(split(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(split(4, 4), vec![0..4]);
        assert_eq!(split(1, 64), vec![0..1]);
    }
}
