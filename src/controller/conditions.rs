//! `metav1.Condition` bookkeeping. Pure: given the old conditions and what was just observed, it
//! yields the new list, keeping `lastTransitionTime` unless the status flipped (a changed timestamp
//! on every pass would make every status write a change, and every change a reconcile).

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time},
    jiff::Timestamp,
};

pub const READY: &str = "Ready";

/// What a reconcile concluded about one condition type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn ready(status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Observed { type_: READY, status, reason: reason.into(), message: message.into() }
    }
}

/// Merges `observed` into `old`, stamping `generation` and `now` where the status changed.
pub fn merge(old: &[Condition], observed: &Observed, generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let status = if observed.status { "True" } else { "False" };
    let previous = old.iter().find(|c| c.type_ == observed.type_);
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => Time(now),
    };
    let updated = Condition {
        type_: observed.type_.to_string(),
        status: status.to_string(),
        reason: observed.reason.clone(),
        message: observed.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let mut conditions: Vec<Condition> = old.iter().filter(|c| c.type_ != observed.type_).cloned().collect();
    conditions.push(updated);
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    conditions
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether an object was last reported Ready for its current spec (`observed` is its status's
/// generation and conditions), holds `finalizer` and is not being deleted. A new leader leaves
/// settled objects to the resync sweep instead of queueing them all at once, and the sweep visits
/// only settled objects: the others have retries and backoff of their own.
pub fn settled(meta: &ObjectMeta, observed: Option<(Option<i64>, &[Condition])>, finalizer: &str) -> bool {
    let reported_ready =
        observed.is_some_and(|(generation, conditions)| generation == meta.generation && is_true(conditions, READY));
    reported_ready && meta.deletion_timestamp.is_none() && meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid timestamp")
    }

    #[test]
    fn settled_means_ready_for_the_current_generation_with_the_finalizer_and_not_deleting() {
        let ready = merge(&[], &Observed::ready(true, "MailboxProvisioned", "ok"), Some(2), at(10));
        let not_ready = merge(&[], &Observed::ready(false, "BackendUnavailable", "down"), Some(2), at(10));
        let meta = ObjectMeta { generation: Some(2), finalizers: Some(vec!["f".into()]), ..Default::default() };
        assert!(settled(&meta, Some((Some(2), &ready)), "f"));
        assert!(!settled(&meta, Some((Some(1), &ready)), "f"), "an older spec was reported on");
        assert!(!settled(&meta, Some((Some(2), &not_ready)), "f"));
        assert!(!settled(&meta, None, "f"), "never reported on");
        assert!(!settled(&meta, Some((Some(2), &ready)), "other"), "the finalizer is not in place yet");
        let deleting = ObjectMeta { deletion_timestamp: Some(Time(at(20))), ..meta };
        assert!(!settled(&deleting, Some((Some(2), &ready)), "f"));
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(&[], &Observed::ready(false, "BackendUnavailable", "down"), Some(1), at(10));
        assert_eq!(first[0].last_transition_time, Time(at(10)));
        let same = merge(&first, &Observed::ready(false, "InvalidSpec", "bad"), Some(2), at(20));
        assert_eq!(same[0].last_transition_time, Time(at(10)));
        assert_eq!(same[0].reason, "InvalidSpec");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, &Observed::ready(true, "MailboxProvisioned", ""), Some(2), at(30));
        assert_eq!(flipped[0].last_transition_time, Time(at(30)));
        assert_eq!(flipped.len(), 1);
        assert!(is_true(&flipped, READY));
    }
}
