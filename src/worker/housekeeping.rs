//! The flash-sale housekeeping pass, run by the worker on `SPIKE_FLASH_SALE_SCHEDULER_INTERVAL`:
//! warm the events about to start (or running cold), reconcile stale reservations and the
//! ledgers, give ended events' unsold units back to their products. Each step goes through every
//! event on its own (a bad event is skipped and reported, see `crate::background`), and a step
//! that fails as a whole (its store is down) does not keep the next one from running.

use std::fmt;

use crate::service::flash_sale::{FlashSale, ReconcileReport};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HousekeepingReport {
    /// Events warmed now.
    pub warmed: usize,
    pub reconciled: ReconcileReport,
    /// Ended events whose unsold units went back now.
    pub unsold_returned: usize,
    /// Steps that failed as a whole, with the error.
    pub failed_steps: Vec<(&'static str, String)>,
}

impl HousekeepingReport {
    /// `Ok` when every step ran; the failed steps otherwise (the pass counts as failed).
    pub fn into_result(self) -> Result<HousekeepingReport, StepsFailed> {
        if self.failed_steps.is_empty() {
            Ok(self)
        } else {
            Err(StepsFailed(self.failed_steps))
        }
    }
}

/// The steps of a pass that failed as a whole.
#[derive(Debug)]
pub struct StepsFailed(pub Vec<(&'static str, String)>);

impl fmt::Display for StepsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (step, error)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{step}: {error}")?;
        }
        Ok(())
    }
}

/// One housekeeping pass over every event.
pub async fn pass(flash_sale: &FlashSale) -> HousekeepingReport {
    let mut report = HousekeepingReport::default();
    match flash_sale.warmup.warm_due_events().await {
        Ok(warmed) => report.warmed = warmed,
        Err(error) => report.failed_steps.push(("warm-up", error.to_string())),
    }
    match flash_sale.reconciler.reconcile().await {
        Ok(reconciled) => report.reconciled = reconciled,
        Err(error) => report.failed_steps.push(("reconcile", error.to_string())),
    }
    match flash_sale.reconciler.return_unsold_units().await {
        Ok(returned) => report.unsold_returned = returned,
        Err(error) => report
            .failed_steps
            .push(("unsold units", error.to_string())),
    }
    report
}
