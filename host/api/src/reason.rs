//! Every reason the operator writes into a condition or an Event, in one
//! place. Code compares `Reason`s, never strings; the string form (the
//! variant's name) is what users see and what metrics are labelled with,
//! so renaming a variant is a breaking change of the status API.

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// Every reason, for documentation and tests.
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            /// The condition reason as written to the API server.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    // A module that cannot be loaded (host/runtime).
    /// The bytes are not WebAssembly.
    NotWasm,
    /// A core module, not a component.
    NotAComponent,
    CompileFailed,
    /// The component does not implement the `security:feature` world.
    ContractMismatch,
    /// Built for another contract version.
    IncompatibleContract,

    // One call into a feature (host/runtime).
    Timeout,
    MemoryLimit,
    /// The budget of all instances together was in use (transient).
    MemoryBudget,
    Trap,
    OutputTooLarge,
    /// The instance trapped earlier in this reconcile.
    Poisoned,
    InstantiateFailed,

    // Fetching a module (host/oci, host/operator/src/modules.rs).
    InvalidModuleReference,
    RegistryUnavailable,
    RegistryError,
    NotAWasmArtifact,
    DigestMismatch,
    ModuleTooLarge,
    ModuleCacheError,
    /// No signature of the module's manifest digest where the verification
    /// policy requires one (host/oci/src/signature.rs).
    SignatureMissing,
    /// Signatures exist, but none by a key the policy trusts (or they do not
    /// cover this digest).
    SignatureInvalid,
    /// A verification key (policy or `module.verify.publicKeys`) that cannot
    /// be read or parsed.
    VerificationKeyError,
    PullSecretError,
    /// The module declares another feature id than the one that names it.
    ModuleIdMismatch,
    /// Compiles of this digest kept not finishing (the operator ran out of memory).
    CompileAborted,
    LoadFailed,
    /// A module failed and the last good one runs instead.
    ModuleRolledBack,

    // Rendering (host/engine).
    UnknownFeature,
    InvalidConfig,
    ContributeFailed,
    PolicyViolation,
    ObjectRejected,
    ObjectConflict,
    SecondCollector,
    InvalidSpec,

    // Applying (host/operator).
    /// An object the agent renders exists and is not its own.
    Conflict,
    /// The API server refused for lack of permission.
    Forbidden,
    SyncFailed,
    Applied,
    Pruned,
    FeatureFailed,

    // The agent's own conditions (host/operator/src/status.rs).
    AllFeaturesReady,
    FeaturesNotReady,
    /// A feature that rendered but has not been assessed.
    NotAssessed,
    /// Degraded=False: every feature runs the module its spec names.
    ModulesAsSpecified,
    NotRunYet,
    /// A scheduled validation run has not reported.
    RunOverdue,
    CheckFailed,
    ScenariosDetected,
    DetectionMissing,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tests and callers outside the operator compare with the string form.
impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_camel_case_words() {
        let mut seen = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(seen.insert(text), "{text} twice");
            // The API server's condition reason pattern.
            assert!(
                text.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && text.chars().all(|c| c.is_ascii_alphanumeric()),
                "{text}"
            );
        }
    }
}
