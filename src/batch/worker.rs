//! One inference thread: takes batches, runs them on its session, and survives what goes wrong.
//!
//! A run that fails is first told apart: the schema's examples are run again on the same
//! session. If they still work, the batch's rows are at fault, and the batch is split in halves
//! until the requests that fail alone are found (422 for them, answers for the others). If they
//! fail too, or the run panicked, the session is at fault: every job of the batch gets an
//! internal error, and the thread opens a new session, the model being not ready while no
//! thread has one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::session::Session;

use super::state::Next;
use super::{Fault, InferError, Job, Part, Shared, MAX_REBUILD_BACKOFF};
use crate::model::{self, ModelSpec, RunError, SessionFactory};
use crate::tensor::rows::{Batch, Outputs, Rows, Slice};

pub(super) struct Worker {
    /// Which of the model's inference threads this is.
    index: usize,
    shared: Arc<Shared>,
    spec: Arc<ModelSpec>,
    factory: Arc<SessionFactory>,
    /// Rows known to run on a working session: the schema's examples, or (when those fail, as
    /// a derived schema's guesses may) the first batch that ran.
    probe: Option<Rows>,
}

/// A session and whether a test has broken it.
struct Live {
    session: Session,
    broken: bool,
}

enum Health {
    Ok,
    Failed,
}

impl Worker {
    pub(super) fn new(index: usize, shared: Arc<Shared>, spec: Arc<ModelSpec>, factory: Arc<SessionFactory>) -> Self {
        let probe = Rows::encode(&spec.plan, spec.schema.examples(), 0).ok();
        Self { index, shared, spec, factory, probe }
    }

    pub(super) fn run(mut self, session: Session) {
        let mut live = Live { session, broken: false };
        if !self.session_works(&mut live) {
            self.probe = None;
        }
        while let Some(taken) = self.next_batch() {
            for job in taken.expired {
                let _ = job.reply.send(Err(InferError::Expired));
            }
            if taken.cancelled_rows > 0 {
                self.shared.stats.cancelled_rows.fetch_add(taken.cancelled_rows as u64, Ordering::Relaxed);
                self.shared.metrics.cancelled(taken.cancelled_rows);
            }
            if taken.batch.is_empty() {
                continue;
            }
            if let Health::Failed = self.run_jobs(&mut live, taken.batch, true) {
                match self.rebuild() {
                    Some(session) => {
                        live = Live { session, broken: false };
                        self.shared.session_restored();
                    }
                    None => return,
                }
            }
        }
    }

    /// Waits for the next batch; `None` once the queue is closed and drained.
    fn next_batch(&self) -> Option<super::state::Taken<Job>> {
        let shared = &self.shared;
        let mut state = shared.lock();
        loop {
            match state.next(Instant::now()) {
                Next::Run => {
                    let taken = state.take_batch(Instant::now());
                    shared.publish(&state);
                    if state.runnable_batches() > 0 {
                        shared.wake.notify_one();
                    }
                    return Some(taken);
                }
                Next::WaitFor(wait) => state = shared.wake.wait_timeout(state, wait).expect("lock poisoned").0,
                Next::Idle => state = shared.wake.wait(state).expect("lock poisoned"),
                Next::Stop => return None,
            }
        }
    }

    /// Runs jobs as one batch and answers each of them. `probe`: on failure, check the session
    /// first (false once a larger batch has shown the session works).
    fn run_jobs(&mut self, live: &mut Live, mut jobs: Vec<(Job, Duration)>, probe: bool) -> Health {
        let lens: Vec<usize> = jobs.iter().map(|(job, _)| job.rows.len).collect();
        let rows = Rows::concat(jobs.iter_mut().map(|(job, _)| std::mem::take(&mut job.rows)));
        let n = rows.len;
        let started = Instant::now();
        let result = self.run_rows(live, &rows);
        let inference = started.elapsed();
        self.count(n, inference);

        let error = match result {
            Ok(outputs) => {
                if self.probe.is_none() {
                    self.probe = Some(rows.clone());
                }
                self.answer(jobs, &lens, Batch { inputs: rows, outputs }, inference);
                return Health::Ok;
            }
            Err(Failure::Panic(message)) => {
                tracing::error!(model = %self.spec.name, rows = n, %message, "inference panicked; rebuilding the session");
                // Not ready before the clients hear of it, so that none is told "ready" after a 500.
                self.shared.session_lost();
                self.fail_all(jobs, &format!("inference panicked: {message}"));
                return Health::Failed;
            }
            Err(Failure::Run(error)) => error,
        };
        if probe && !self.session_works(live) {
            tracing::error!(model = %self.spec.name, rows = n, %error, "the session fails on known-good rows; rebuilding it");
            self.shared.session_lost();
            self.fail_all(jobs, &error.to_string());
            return Health::Failed;
        }
        // The rows go back to their jobs, to be run again in smaller batches.
        for ((job, _), rows) in jobs.iter_mut().zip(rows.split(&lens)) {
            job.rows = rows;
        }
        if jobs.len() == 1 {
            let (job, queue) = jobs.pop().expect("one job");
            self.shared.metrics.dequeued(queue);
            let _ = job.reply.send(Err(InferError::Rejected(error.to_string())));
            return Health::Ok;
        }
        // Some request's rows are refused: halve until the requests that fail alone are found.
        let right = jobs.split_off(jobs.len() / 2);
        match self.run_jobs(live, jobs, false) {
            Health::Ok => self.run_jobs(live, right, false),
            Health::Failed => {
                self.fail_all(right, "the session failed");
                Health::Failed
            }
        }
    }

    fn run_rows(&self, live: &mut Live, rows: &Rows) -> Result<Outputs, Failure> {
        let faults = &self.shared.faults;
        if faults.take(Fault::BreakSession) {
            live.broken = true;
        }
        if live.broken {
            return Err(Failure::Run(RunError::Injected("broken session")));
        }
        let panics = faults.take(Fault::Panic);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if panics {
                panic!("injected panic");
            }
            model::run(&self.spec, &mut live.session, rows)
        }));
        match outcome {
            Ok(result) => result.map_err(Failure::Run),
            Err(cause) => Err(Failure::Panic(panic_message(&*cause))),
        }
    }

    fn session_works(&self, live: &mut Live) -> bool {
        match &self.probe {
            Some(rows) => self.run_rows(live, rows).is_ok(),
            // Examples that cannot be encoded cannot tell; the rows get the benefit of the doubt.
            None => !live.broken,
        }
    }

    fn answer(&self, jobs: Vec<(Job, Duration)>, lens: &[usize], batch: Batch, inference: Duration) {
        let n = batch.inputs.len;
        let batch = Arc::new(batch);
        let mut start = 0;
        for ((job, queue), &len) in jobs.into_iter().zip(lens) {
            self.shared.metrics.dequeued(queue);
            let part = Part { rows: len, batch_rows: n, queue, inference };
            let slice = Slice { batch: batch.clone(), rows: start..start + len };
            start += len;
            // A client that left meanwhile no longer listens; nothing to do.
            let _ = job.reply.send(Ok((slice, part)));
        }
    }

    fn fail_all(&self, jobs: Vec<(Job, Duration)>, cause: &str) {
        for (job, queue) in jobs {
            self.shared.metrics.dequeued(queue);
            let _ = job.reply.send(Err(InferError::Internal(format!("model '{}': {cause}", self.spec.name))));
        }
    }

    fn count(&self, n: usize, inference: Duration) {
        let stats = &self.shared.stats;
        stats.inference_us.fetch_add(inference.as_micros() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.batches_by_thread[self.index].fetch_add(1, Ordering::Relaxed);
        stats.rows.fetch_add(n as u64, Ordering::Relaxed);
        stats.largest_batch.fetch_max(n as u64, Ordering::Relaxed);
        self.shared.metrics.batch(n, inference);
    }

    /// Opens a new session, retrying with growing pauses; `None` when the queue closes first.
    fn rebuild(&self) -> Option<Session> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = if self.shared.faults.take(Fault::FailRebuild) {
                Err("injected rebuild failure".to_owned())
            } else {
                self.factory.open(&self.spec).map_err(|e| e.to_string())
            };
            self.shared.stats.session_restarts.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.session_restart(attempt.is_ok());
            match attempt {
                Ok(session) => {
                    tracing::info!(model = %self.spec.name, "session rebuilt");
                    return Some(session);
                }
                Err(error) => {
                    tracing::error!(model = %self.spec.name, %error, retry_ms = backoff.as_millis() as u64, "cannot rebuild the session");
                }
            }
            let state = self.shared.lock();
            if state.is_closed() {
                return None;
            }
            drop(self.shared.wake.wait_timeout(state, backoff).expect("lock poisoned"));
            backoff = (backoff * 2).min(MAX_REBUILD_BACKOFF);
        }
    }
}

enum Failure {
    Panic(String),
    Run(RunError),
}

fn panic_message(cause: &(dyn std::any::Any + Send)) -> String {
    cause
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| cause.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into())
}
