//! What is remembered of each agent's features between renders, in one
//! place: the last good output of a feature (reused while its inputs are
//! unchanged, and standing in when the feature fails) and the last good
//! module (what a failing new module is rolled back to, by the operator's
//! host/operator/src/modules.rs). Both are keyed by [`AgentId`] and feature
//! name; the `forget_*` calls here are the only way anything leaves.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use secop_api::AgentId;
use secop_feature_sdk::model as m;
use secop_runtime::Limits;

use crate::registry::Entry;
use crate::render::Output;

/// A module that rendered without error for one agent's feature.
#[derive(Clone)]
pub struct GoodModule {
    /// The reference it was fetched by; None for the built-in module.
    pub image: Option<String>,
    pub entry: Entry,
    /// Who signed it, when its signature was verified (shown in status).
    pub signer: Option<String>,
}

/// The inputs a feature's calls are a function of: module digest, limits,
/// config and context. An output is reused only for the same inputs.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Inputs(String);

impl Inputs {
    pub(crate) fn new(entry: &Entry, limits: Limits, config: &str, ctx: &m::Context) -> Self {
        Self(format!(
            "{}\n{:?}\n{config}\n{}",
            entry.digest().unwrap_or("native"),
            limits,
            serde_json::to_string(ctx).unwrap_or_default()
        ))
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Slot {
    agent: AgentId,
    feature: String,
}

impl Slot {
    fn new(agent: &AgentId, feature: &str) -> Self {
        Self { agent: agent.clone(), feature: feature.to_string() }
    }
}

#[derive(Default)]
struct Remembered {
    output: Option<(Inputs, Arc<Output>)>,
    module: Option<GoodModule>,
}

/// One entry per (agent, feature), replaced on change; failures are never
/// remembered.
#[derive(Default)]
pub struct Memo {
    slots: Mutex<HashMap<Slot, Remembered>>,
}

impl Memo {
    fn slots(&self) -> MutexGuard<'_, HashMap<Slot, Remembered>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The output computed from exactly these inputs, if any.
    pub(crate) fn output(&self, agent: &AgentId, feature: &str, inputs: &Inputs) -> Option<Arc<Output>> {
        let slots = self.slots();
        let (remembered, output) = slots.get(&Slot::new(agent, feature))?.output.as_ref()?;
        (remembered == inputs).then(|| output.clone())
    }

    /// The last good output of a feature, whatever its inputs were.
    pub(crate) fn last_good_output(&self, agent: &AgentId, feature: &str) -> Option<Arc<Output>> {
        self.slots().get(&Slot::new(agent, feature))?.output.as_ref().map(|(_, output)| output.clone())
    }

    /// Called by the render for outputs that were admitted into a desired
    /// state without error.
    pub(crate) fn remember_output(&self, agent: &AgentId, feature: &str, inputs: Inputs, output: Arc<Output>) {
        self.slots().entry(Slot::new(agent, feature)).or_default().output = Some((inputs, output));
    }

    /// A module rendered without error for this agent's feature: it is what
    /// a later failing module is rolled back to.
    pub fn remember_module(&self, agent: &AgentId, feature: &str, module: GoodModule) {
        self.slots().entry(Slot::new(agent, feature)).or_default().module = Some(module);
    }

    pub fn last_good_module(&self, agent: &AgentId, feature: &str) -> Option<GoodModule> {
        self.slots().get(&Slot::new(agent, feature))?.module.clone()
    }

    /// Forget one feature's output: the module that produced it is being
    /// rolled back, so it must not stand in later. Its last good module
    /// stays: that is what it is rolled back to.
    pub fn forget_output(&self, agent: &AgentId, feature: &str) {
        if let Some(remembered) = self.slots().get_mut(&Slot::new(agent, feature)) {
            remembered.output = None;
        }
    }

    /// Forget everything about an agent (it was deleted): a new agent of
    /// the same name starts clean.
    pub fn forget_agent(&self, agent: &AgentId) {
        self.slots().retain(|slot, _| &slot.agent != agent);
    }

    /// sha256 of every module some agent may be rolled back to.
    pub fn module_digests(&self) -> HashSet<String> {
        self.slots().values().filter_map(|r| r.module.as_ref()?.entry.digest().map(str::to_string)).collect()
    }
}
