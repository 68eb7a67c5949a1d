//! The one conversion between the WIT contract's generated types and
//! [`crate::model`]. The host (wasmtime's `bindgen!`, host/runtime) and the
//! guest (wit-bindgen, [`crate::glue`]) generate different Rust types from
//! the same `wit/feature.wit`; each invokes [`wit_model_conversions!`] on
//! its bindings and gets `From` both ways, so a field added to the contract
//! is mapped here once.

/// `From` impls both ways between the record and enum types of the WIT
/// `types` interface at `$($wit)+` and the SDK's model, in a private module
/// of the invoking crate.
#[doc(hidden)]
#[macro_export]
macro_rules! wit_model_conversions {
    ($($wit:tt)+) => {
        mod wit_model_conversions {
            use $($wit)+ as wit;
            use $crate::model as m;

            /// A field's conversion: itself, or element-wise.
            trait Conv<T> {
                fn conv(self) -> T;
            }

            impl<A: Conv<B>, B> Conv<Option<B>> for Option<A> {
                fn conv(self) -> Option<B> {
                    self.map(Conv::conv)
                }
            }

            impl<A: Conv<B>, B> Conv<Vec<B>> for Vec<A> {
                fn conv(self) -> Vec<B> {
                    self.into_iter().map(Conv::conv).collect()
                }
            }

            $crate::__conv_same!(String, u32, u8);

            $crate::__conv_records! {
                Metadata { id, priority, contract_version, description, condition_type }
                SecretRef { name }
                OutputSettings { endpoints, auth_secret, ca_secret, index_inventory, index_events, index_vulnerabilities }
                Context { namespace, agent_name, cluster_name, output, operator_image }
                ConfigError { field, message }
                Diagnostic { level, field, message }
                TimestampField { field, layout }
                SubjectPaths { namespace, pod, node }
                SeverityRule { path, equals, severity }
                FieldMatch { path, equals }
                FieldLift { from, to, strip_pattern, when }
                OtelReceiver { name, include, exclude, format, timestamp, tool, target, subject, severity, event_kind, lifts }
                CollectorSlots {
                    node_daemonset, node_container, gateway_deployment, node_config_map, gateway_config_map,
                    config_key, gateway_endpoint, storage_directory, username_env, password_env, ca_file
                }
                Condition { type_, status, reason, message }
            }

            $crate::__conv_enums! {
                DiagnosticLevel { Info, Warning }
                TargetIndex { Inventory, Events, Vulnerabilities }
                LineFormat { Json, ContainerJson }
                TimestampLayout { Rfc3339Nano, EpochSeconds }
                ConditionStatus { True, False, Unknown }
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conv_same {
    ($($t:ty),*) => {
        $(impl Conv<$t> for $t {
            fn conv(self) -> $t {
                self
            }
        })*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conv_records {
    ($($name:ident { $($field:ident),* $(,)? })*) => {
        $(
            impl From<wit::$name> for m::$name {
                fn from(v: wit::$name) -> Self {
                    Self { $($field: Conv::conv(v.$field)),* }
                }
            }

            impl From<m::$name> for wit::$name {
                fn from(v: m::$name) -> Self {
                    Self { $($field: Conv::conv(v.$field)),* }
                }
            }

            $crate::__conv_via_from!($name);
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conv_enums {
    ($($name:ident { $($variant:ident),* })*) => {
        $(
            impl From<wit::$name> for m::$name {
                fn from(v: wit::$name) -> Self {
                    match v {
                        $(wit::$name::$variant => m::$name::$variant),*
                    }
                }
            }

            impl From<m::$name> for wit::$name {
                fn from(v: m::$name) -> Self {
                    match v {
                        $(m::$name::$variant => wit::$name::$variant),*
                    }
                }
            }

            $crate::__conv_via_from!($name);
        )*
    };
}

/// `Conv` both ways for a type whose `From` impls exist, so it can be a
/// field (or an element) of another.
#[doc(hidden)]
#[macro_export]
macro_rules! __conv_via_from {
    ($name:ident) => {
        impl Conv<m::$name> for wit::$name {
            fn conv(self) -> m::$name {
                self.into()
            }
        }

        impl Conv<wit::$name> for m::$name {
            fn conv(self) -> wit::$name {
                self.into()
            }
        }
    };
}
