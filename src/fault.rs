//! Test-only fault injection. `WEIM_FAULT` (read once at start with the
//! configuration; never set in production) names a place that panics when
//! it handles a chat message whose body is [`TRIGGER`], so integration
//! tests can check, through a real socket, what a thread's panic does to
//! the node. Unset, each place costs one comparison of a `None`.

/// The environment variable.
pub const VAR: &str = "WEIM_FAULT";
/// The message body that trips the configured fault.
pub const TRIGGER: &str = "weim-fault-trigger";

/// Where the fault is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `commit-panic`: the committer panics on a batch holding the trigger
    /// (after the relation checks, before the transaction).
    CommitPanic,
    /// `reactor-panic`: the reactor reading a Cmd 20 with the trigger
    /// panics (in `chat::from_socket`, which runs on the reactor).
    ReactorPanic,
}

impl Fault {
    /// The fault a value of [`VAR`] names.
    pub fn parse(value: &str) -> Result<Fault, String> {
        match value {
            "commit-panic" => Ok(Fault::CommitPanic),
            "reactor-panic" => Ok(Fault::ReactorPanic),
            other => Err(format!(
                "{VAR}: unknown fault {other:?} (test-only: commit-panic or reactor-panic)"
            )),
        }
    }

    /// Panics when `self`, the configured fault, is `at` and `body` is the
    /// trigger.
    pub fn trip(self, at: Fault, body: &str) {
        if self == at && body == TRIGGER {
            panic!("{VAR}: injected {self:?}");
        }
    }
}
