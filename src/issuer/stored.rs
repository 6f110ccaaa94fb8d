//! A stored credential (`auth_token`, `api_key`): every caller gets a
//! lease on the broker's cached current value.

use std::sync::Arc;

use super::{Caller, IssueError, Issuer};
use crate::{
    broker::{Broker, Entry, Lease, LeaseStream},
    config::AllowList,
};

/// The issuer of one broker entry.
pub struct Stored {
    entry: Arc<Entry>,
    broker: Arc<Broker>,
}

impl Stored {
    /// Leases on `entry`, timed by `broker`'s clock.
    pub fn new(entry: Arc<Entry>, broker: Arc<Broker>) -> Self {
        Self { entry, broker }
    }
}

#[async_trait::async_trait]
impl Issuer for Stored {
    fn name(&self) -> &str {
        self.entry.name()
    }

    fn kind(&self) -> &'static str {
        self.entry.kind().as_str()
    }

    fn allow(&self) -> &AllowList {
        &self.entry.config.allow
    }

    async fn issue(&self, _caller: Caller) -> Result<Lease, IssueError> {
        Ok(self.entry.lease(self.broker.clock())?)
    }

    fn stored(&self) -> Result<&Arc<Entry>, IssueError> {
        Ok(&self.entry)
    }

    fn watch(self: Arc<Self>, broker: &Broker) -> Result<LeaseStream, IssueError> {
        self.entry.lease(broker.clock())?;
        Ok(broker.watch(Arc::clone(&self.entry)))
    }
}
