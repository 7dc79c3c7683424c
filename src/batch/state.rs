//! The batching policy, free of threads and clocks so that it can be tested directly.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

/// What the queue needs to know about a waiting job.
pub trait Pending {
    fn rows(&self) -> usize;
    /// True once the client has gone away; such jobs are dropped, not run.
    fn is_cancelled(&self) -> bool;
    /// Past this instant the job's request has failed; it is answered without running.
    fn deadline(&self) -> Instant;
    /// The request the job belongs to, so that a request that gives up can withdraw its jobs.
    fn request(&self) -> u64;
}

/// Why rows were not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue has no room now; retrying later may work.
    Full {
        queued: usize,
        capacity: usize,
    },
    /// The request is larger than the whole queue and can never be admitted.
    TooLarge {
        rows: usize,
        capacity: usize,
    },
    Closed,
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

/// One batch taken from the queue.
#[derive(Debug)]
pub struct Taken<J> {
    /// Jobs to run, each with its time in the queue.
    pub batch: Vec<(J, Duration)>,
    /// Jobs whose deadline passed while they waited; answered, not run.
    pub expired: Vec<J>,
    /// Rows of jobs whose client had gone away.
    pub cancelled_rows: usize,
}

#[derive(Debug)]
pub struct State<J> {
    queue: VecDeque<(J, Instant)>,
    /// Rows in `queue`.
    queued_rows: usize,
    /// Rows admitted but not queued yet (their request is being validated and encoded).
    reserved_rows: usize,
    max_batch_rows: usize,
    capacity_rows: usize,
    max_delay: Duration,
    closed: bool,
}

impl<J: Pending> State<J> {
    pub fn new(max_batch_rows: usize, capacity_rows: usize, max_delay: Duration) -> Self {
        assert!(max_batch_rows > 0 && capacity_rows >= max_batch_rows, "checked by Config::check");
        Self {
            queue: VecDeque::new(),
            queued_rows: 0,
            reserved_rows: 0,
            max_batch_rows,
            capacity_rows,
            max_delay,
            closed: false,
        }
    }

    /// Rows waiting or admitted: what counts against the capacity.
    pub fn queued_rows(&self) -> usize {
        self.queued_rows + self.reserved_rows
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Admits a request's rows before any work is spent on them, all or none, so that a shed
    /// request costs no encoding and a request is never half-queued.
    pub fn reserve(&mut self, rows: usize) -> Result<(), Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        if rows > self.capacity_rows {
            return Err(Refused::TooLarge { rows, capacity: self.capacity_rows });
        }
        let queued = self.queued_rows();
        if queued + rows > self.capacity_rows {
            return Err(Refused::Full { queued, capacity: self.capacity_rows });
        }
        self.reserved_rows += rows;
        Ok(())
    }

    /// Gives back reserved rows that will not be queued (their request failed validation).
    pub fn release(&mut self, rows: usize) {
        debug_assert!(rows <= self.reserved_rows, "released more rows than reserved");
        self.reserved_rows -= rows.min(self.reserved_rows);
    }

    /// Queues jobs whose rows were reserved. Closing in between does not refuse them: their
    /// rows were admitted and are drained like the rest.
    pub fn push_reserved(&mut self, jobs: Vec<J>, now: Instant) {
        let rows: usize = jobs.iter().map(Pending::rows).sum();
        debug_assert!(jobs.iter().all(|j| j.rows() <= self.max_batch_rows), "jobs are split before queueing");
        self.release(rows);
        self.queued_rows += rows;
        self.queue.extend(jobs.into_iter().map(|j| (j, now)));
    }

    /// Reserves and queues in one step.
    pub fn push_all(&mut self, jobs: Vec<J>, now: Instant) -> Result<(), Refused> {
        self.reserve(jobs.iter().map(Pending::rows).sum())?;
        self.push_reserved(jobs, now);
        Ok(())
    }

    /// Removes a request's jobs that are still waiting (its client left or its deadline passed),
    /// so that their rows stop holding capacity at once. Returns the rows removed.
    pub fn withdraw(&mut self, request: u64) -> usize {
        let before = self.queued_rows;
        let queued_rows = &mut self.queued_rows;
        self.queue.retain(|(job, _)| {
            let keep = job.request() != request;
            if !keep {
                *queued_rows -= job.rows();
            }
            keep
        });
        before - self.queued_rows
    }

    /// Stops admission; queued jobs are still handed out until the queue is empty.
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn next(&self, now: Instant) -> Next {
        let Some((_, oldest)) = self.queue.front() else {
            return if self.closed && self.reserved_rows == 0 { Next::Stop } else { Next::Idle };
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

    /// How many more threads have a batch to take right now, for waking them.
    pub fn runnable_batches(&self) -> usize {
        if self.queue.is_empty() {
            0
        } else {
            self.queued_rows.div_ceil(self.max_batch_rows)
        }
    }

    /// Takes jobs in arrival order while they fit in one batch, skipping cancelled ones and
    /// setting aside those whose deadline has passed.
    pub fn take_batch(&mut self, now: Instant) -> Taken<J> {
        let mut taken = Taken { batch: Vec::new(), expired: Vec::new(), cancelled_rows: 0 };
        let mut rows = 0;
        while let Some((job, _)) = self.queue.front() {
            let dead = job.is_cancelled() || job.deadline() <= now;
            if !dead && rows + job.rows() > self.max_batch_rows {
                break;
            }
            let (job, since) = self.queue.pop_front().expect("front exists");
            self.queued_rows -= job.rows();
            if job.is_cancelled() {
                taken.cancelled_rows += job.rows();
            } else if job.deadline() <= now {
                taken.expired.push(job);
            } else {
                rows += job.rows();
                taken.batch.push((job, now.saturating_duration_since(since)));
            }
        }
        taken
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
        deadline: Instant,
    }

    impl Pending for Job {
        fn rows(&self) -> usize {
            self.rows
        }
        fn is_cancelled(&self) -> bool {
            self.cancelled.get()
        }
        fn deadline(&self) -> Instant {
            self.deadline
        }
        fn request(&self) -> u64 {
            u64::from(self.id / 10)
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn job(id: u32, rows: usize) -> Job {
        Job { id, rows, cancelled: Cell::new(false), deadline: far() }
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
        assert_eq!(s.runnable_batches(), 2, "9 rows make two batches of at most 8");
        let taken = s.take_batch(t);
        assert_eq!((ids(&taken.batch), taken.cancelled_rows), (vec![1, 2], 0));
        assert_eq!(s.queued_rows(), 2);
        let taken = s.take_batch(t);
        assert_eq!(ids(&taken.batch), vec![3]);
        assert_eq!(s.next(t), Next::Idle);
        assert_eq!(s.runnable_batches(), 0);
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
        let taken = s.take_batch(t);
        assert_eq!((ids(&taken.batch), taken.cancelled_rows), (vec![2, 3], 5), "job 1's five rows were dropped");
        assert_eq!(s.queued_rows(), 0);
    }

    #[test]
    fn expired_jobs_are_set_aside_unrun() {
        let t = Instant::now();
        let mut s = State::new(8, 100, Duration::ZERO);
        let mut late = job(1, 6);
        late.deadline = t;
        s.push_all(vec![late, job(2, 5)], t).unwrap();
        let taken = s.take_batch(t);
        assert_eq!(ids(&taken.batch), vec![2], "the expired job does not take room in the batch");
        assert_eq!(taken.expired.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.queued_rows(), 0);
    }

    #[test]
    fn a_withdrawn_request_frees_its_rows_at_once_wherever_it_waits() {
        let t = Instant::now();
        let mut s = State::new(4, 10, Duration::ZERO);
        // Request 0 (ids 1, 2) waits behind request 1 (id 10): behind the head of the queue.
        s.push_all(vec![job(10, 4)], t).unwrap();
        s.push_all(vec![job(1, 4), job(2, 2)], t).unwrap();
        assert_eq!(s.reserve(1), Err(Refused::Full { queued: 10, capacity: 10 }));
        assert_eq!(s.withdraw(0), 6);
        assert_eq!(s.queued_rows(), 4);
        s.reserve(6).unwrap();
        assert_eq!(ids(&s.take_batch(t).batch), vec![10]);
    }

    #[test]
    fn full_queue_refuses_the_whole_request() {
        let t = Instant::now();
        let mut s = State::new(4, 10, Duration::ZERO);
        s.push_all(vec![job(1, 4), job(2, 4)], t).unwrap();
        let err = s.push_all(vec![job(3, 2), job(4, 1)], t).unwrap_err();
        assert_eq!(err, Refused::Full { queued: 8, capacity: 10 });
        assert_eq!(s.queued_rows(), 8, "nothing of the refused request was queued");
        s.push_all(vec![job(5, 2)], t).unwrap();
    }

    #[test]
    fn a_request_larger_than_the_queue_is_refused_as_too_large_even_when_empty() {
        let mut s: State<Job> = State::new(4, 10, Duration::ZERO);
        assert_eq!(s.reserve(11), Err(Refused::TooLarge { rows: 11, capacity: 10 }));
        assert_eq!(s.queued_rows(), 0);
    }

    #[test]
    fn reserved_rows_count_against_capacity_until_queued_or_released() {
        let t = Instant::now();
        let mut s = State::new(4, 10, Duration::ZERO);
        s.reserve(8).unwrap();
        assert_eq!(s.reserve(3), Err(Refused::Full { queued: 8, capacity: 10 }));
        assert_eq!(s.next(t), Next::Idle, "reserved rows are not runnable yet");
        s.release(4);
        s.push_reserved(vec![job(1, 4)], t);
        assert_eq!(s.queued_rows(), 4);
        s.reserve(6).unwrap();
    }

    #[test]
    fn closing_drains_then_stops() {
        let t = Instant::now();
        let mut s = State::new(4, 10, Duration::from_secs(60));
        s.push_all(vec![job(1, 1)], t).unwrap();
        s.reserve(2).unwrap();
        s.close();
        assert_eq!(s.reserve(1), Err(Refused::Closed));
        assert_eq!(s.next(t), Next::Run, "a closing queue does not wait for fuller batches");
        s.take_batch(t);
        assert_eq!(s.next(t), Next::Idle, "rows admitted before closing are still to come");
        s.push_reserved(vec![job(2, 2)], t);
        s.take_batch(t);
        assert_eq!(s.next(t), Next::Stop);
    }

    #[test]
    fn queue_time_is_reported_per_job() {
        let t = Instant::now();
        let mut s = State::new(4, 10, Duration::ZERO);
        s.push_all(vec![job(1, 1)], t).unwrap();
        let taken = s.take_batch(t + Duration::from_millis(3));
        assert_eq!(taken.batch[0].1, Duration::from_millis(3));
    }

    #[test]
    fn split_covers_every_row_in_order() {
        assert_eq!(split(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(split(4, 4), vec![0..4]);
        assert_eq!(split(1, 64), vec![0..1]);
    }
}
