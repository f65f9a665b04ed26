//! The one table of allowed lifecycle transitions. Every state change in the store is checked
//! here and then written as a compare-and-set on the observed state.

use super::model::SandboxState::{self, *};

const ALLOWED: &[(SandboxState, SandboxState)] = &[
    (Pending, Creating),
    (Pending, Failed),
    (Creating, Running),
    (Creating, Ready),
    (Creating, Failed),
    (Ready, Running),
    (Ready, Destroying),
    (Ready, Failed),
    (Running, Ready),
    (Running, Expired),
    (Running, Destroying),
    (Running, Failed),
    (Expired, Destroying),
    (Failed, Destroying),
    (Destroying, Destroyed),
];

pub fn is_allowed(from: SandboxState, to: SandboxState) -> bool {
    ALLOWED.contains(&(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroyed_is_terminal_and_destroy_needs_destroying_first() {
        for state in SandboxState::ALL {
            assert!(!is_allowed(Destroyed, state));
        }
        assert!(!is_allowed(Running, Destroyed));
        assert!(is_allowed(Running, Destroying));
        assert!(is_allowed(Failed, Destroying));
    }
}
