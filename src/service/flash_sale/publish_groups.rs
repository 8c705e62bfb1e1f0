//! Group commit on the buy path: the reservations of concurrent buy requests go to the broker
//! together, one message and one confirm per group, instead of one each.
//!
//! There is no timer. A request that finds no open group opens one and publishes it as soon as
//! one of `in_flight` publish slots is free; requests arriving meanwhile join it, up to `max`. An
//! idle shop publishes each reservation at once; a busy one publishes ever bigger groups while
//! the broker confirms the previous ones. Every member learns its group's fate: confirmed, or
//! not, and then each undoes its own reservation (exactly the group's).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};
use tracing::{Instrument, Span};

use crate::service::ServiceError;
use crate::service::messages::{ReservationGroup, ReservationMessage};
use crate::telemetry::traces;

/// What every member of a group is told: a failure is shared by all of them.
pub type GroupResult = Result<(), Arc<ServiceError>>;

/// Publishes one group (the order queue in production; a recorder in unit tests).
pub trait GroupSink: Clone + Send + Sync + 'static {
    fn publish(
        &self,
        group: ReservationGroup,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

pub struct PublishGroups<S> {
    sink: S,
    max: usize,
    slots: Arc<Semaphore>,
    state: Arc<Mutex<State>>,
}

impl<S: Clone> Clone for PublishGroups<S> {
    fn clone(&self) -> Self {
        PublishGroups {
            sink: self.sink.clone(),
            max: self.max,
            slots: self.slots.clone(),
            state: self.state.clone(),
        }
    }
}

#[derive(Default)]
struct State {
    /// The group new requests join, if one is open.
    open: Option<u64>,
    /// Groups waiting for a publish slot, open or full.
    waiting: HashMap<u64, Vec<Member>>,
    next_id: u64,
}

struct Member {
    reservation: ReservationMessage,
    done: oneshot::Sender<GroupResult>,
    /// The span of the request that reserved, and whether it is traced (its trace continues
    /// through the group).
    span: Span,
    traced: bool,
}

impl<S: GroupSink> PublishGroups<S> {
    /// Groups of up to `max` reservations, at most `in_flight` of them unconfirmed at once.
    pub fn new(sink: S, max: usize, in_flight: usize) -> PublishGroups<S> {
        PublishGroups {
            sink,
            max: max.max(1),
            slots: Arc::new(Semaphore::new(in_flight.max(1))),
            state: Arc::default(),
        }
    }

    /// Publishes `reservation` with whichever group it joins; returns once the broker has
    /// confirmed that group (or failed to).
    pub async fn publish(&self, reservation: ReservationMessage) -> GroupResult {
        let (done, confirmed) = oneshot::channel();
        let member = Member {
            reservation,
            done,
            span: Span::current(),
            traced: traces::traced(),
        };
        if let Some(group) = self.join(member) {
            // The group's publishing runs on a task of its own: a request cancelled now (its
            // client went away) must not strand the members that joined it.
            let groups = self.clone();
            tokio::spawn(async move { groups.publish_group(group).await });
        }
        confirmed.await.unwrap_or_else(|_| {
            Err(Arc::new(ServiceError::internal(
                "a reservation's publish group was dropped",
            )))
        })
    }

    /// Adds the member to the open group; `Some(id)` when it opened a new one (and so
    /// publishes it).
    fn join(&self, member: Member) -> Option<u64> {
        let mut state = self.state.lock().expect("publish groups poisoned");
        if let Some(open) = state.open
            && let Some(members) = state.waiting.get_mut(&open)
            && members.len() < self.max
        {
            members.push(member);
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.open = Some(id);
        state.waiting.insert(id, vec![member]);
        Some(id)
    }

    async fn publish_group(&self, id: u64) {
        let slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let members = {
            let mut state = self.state.lock().expect("publish groups poisoned");
            if state.open == Some(id) {
                state.open = None;
            }
            state.waiting.remove(&id).unwrap_or_default()
        };
        // The group is traced when one of its requests is; that one is its parent.
        let traced = members.iter().any(|member| member.traced);
        let (result, done) = traces::in_scope(traced, async {
            let span = group_span(&members);
            let (reservations, done): (Vec<_>, Vec<_>) = members
                .into_iter()
                .map(|member| (member.reservation, member.done))
                .unzip();
            let result = self
                .sink
                .publish(ReservationGroup { reservations })
                .instrument(span)
                .await
                .map_err(Arc::new);
            (result, done)
        })
        .await;
        drop(slot);
        for member in done {
            // A member whose request was cancelled no longer listens.
            let _ = member.send(result.clone());
        }
    }
}

/// The span of publishing a group: the child of its first traced request, linked to the other
/// traced ones, so each traced buyer's trace reaches the message that carries its reservation.
fn group_span(members: &[Member]) -> Span {
    let mut traced = members.iter().filter(|member| member.traced);
    let Some(first) = traced.next() else {
        return Span::none();
    };
    let span = tracing::debug_span!(
        parent: &first.span,
        "flash_sale.publish_group",
        reservations = members.len()
    );
    for member in traced {
        traces::link(&span, &member.span);
    }
    span
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Records the groups; refuses them while `refuse` is set; each publish takes a moment, as a
    /// broker's confirm does.
    #[derive(Clone, Default)]
    struct Recorder {
        groups: Arc<Mutex<Vec<Vec<String>>>>,
        refuse: Arc<AtomicBool>,
    }

    impl GroupSink for Recorder {
        async fn publish(&self, group: ReservationGroup) -> Result<(), ServiceError> {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let tickets = group.reservations.into_iter().map(|r| r.ticket).collect();
            self.groups.lock().unwrap().push(tickets);
            if self.refuse.load(Ordering::SeqCst) {
                return Err(ServiceError::Retryable("nacked".into()));
            }
            Ok(())
        }
    }

    fn reservation(ticket: usize) -> ReservationMessage {
        ReservationMessage {
            ticket: ticket.to_string(),
            event_id: 1,
            user_id: ticket as u64,
            reserved_at_ms: 0,
            request_id: None,
        }
    }

    #[tokio::test]
    async fn a_lone_request_is_published_at_once_in_a_group_of_its_own() {
        let recorder = Recorder::default();
        let groups = PublishGroups::new(recorder.clone(), 10, 1);
        groups.publish(reservation(1)).await.unwrap();
        groups.publish(reservation(2)).await.unwrap();
        assert_eq!(*recorder.groups.lock().unwrap(), vec![vec!["1"], vec!["2"]]);
    }

    #[tokio::test]
    async fn concurrent_requests_share_groups_of_at_most_max_and_each_is_published_once() {
        let recorder = Recorder::default();
        let groups = PublishGroups::new(recorder.clone(), 8, 2);
        let results = futures_util::future::join_all(
            (0..100).map(|ticket| groups.publish(reservation(ticket))),
        )
        .await;
        assert!(results.iter().all(Result::is_ok));
        let published = recorder.groups.lock().unwrap().clone();
        assert!(
            published.iter().all(|group| group.len() <= 8),
            "{published:?}"
        );
        assert!(
            published.len() < 100,
            "requests were grouped: {published:?}"
        );
        let mut tickets: Vec<usize> = published
            .iter()
            .flatten()
            .map(|ticket| ticket.parse().unwrap())
            .collect();
        tickets.sort_unstable();
        assert_eq!(tickets, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_refused_group_fails_exactly_its_own_members() {
        let recorder = Recorder::default();
        let groups = PublishGroups::new(recorder.clone(), 4, 1);
        recorder.refuse.store(true, Ordering::SeqCst);
        let refused = futures_util::future::join_all(
            (0..4).map(|ticket| groups.publish(reservation(ticket))),
        )
        .await;
        recorder.refuse.store(false, Ordering::SeqCst);
        assert!(groups.publish(reservation(9)).await.is_ok());
        assert!(refused.iter().all(Result::is_err));
        let published = recorder.groups.lock().unwrap().clone();
        assert_eq!(published.last().unwrap(), &vec!["9".to_owned()]);
        assert_eq!(published.iter().flatten().count(), 5);
    }
}
