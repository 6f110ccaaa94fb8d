//! The steps that talk to Twilio: create the new value (after sweeping
//! orphaned keys), test it, and retire the old one. `advance` in `mod.rs`
//! orders them and writes each result to the document.

use super::*;

impl Rotator {
    /// Step 2: create the new key or secondary token and record it in `raw`.
    pub(super) async fn create(
        &self,
        name: &str,
        rotation: &RotationConfig,
        claim: &Claim,
        raw: &mut RawDocument,
        parsed: &CredentialDocument,
        now: SystemTime,
    ) -> Result<(), RotationError> {
        let twilio_err = |step, source| RotationError::Twilio {
            name: name.to_owned(),
            step,
            source,
        };
        match &parsed.current.secret {
            Secret::ApiKey { sid, .. } => {
                let admin = self.admin(name, rotation).await?;
                self.sweep(name, &admin, raw).await?;
                // The new key keeps the old one's type: a Restricted key's
                // successor gets its Policy, never the wider Standard type.
                // Unknown, the rotation stops here rather than guess.
                let policy = self
                    .twilio
                    .key_policy(&admin, sid.as_str())
                    .await
                    .map_err(|e| twilio_err("read the current key's type and policy", e))?;
                let friendly = format!("{}{}", key_prefix(name), claim.rotation_id);
                let key = self
                    .twilio
                    .create_key(&admin, &friendly, policy.as_deref())
                    .await
                    .map_err(|e| twilio_err("create key", e))?;
                if policy.is_some() {
                    tracing::info!(credential = %name, key = key.sid.as_str(), "the new key is Restricted, with the old key's policy");
                }
                raw.set_pending_key(key.sid.as_str(), &key.secret);
            }
            Secret::AuthToken(_) => {
                let current = &parsed.current;
                let token = match self.twilio.create_secondary_token(current).await {
                    Ok(t) => t,
                    // One is left from a crashed attempt: its value is lost; start over.
                    Err(TwilioError::Rejected { .. }) => {
                        self.twilio
                            .delete_secondary_token(current)
                            .await
                            .map_err(|e| twilio_err("delete stale secondary token", e))?;
                        self.twilio
                            .create_secondary_token(current)
                            .await
                            .map_err(|e| twilio_err("create secondary token", e))?
                    }
                    Err(e) => return Err(twilio_err("create secondary token", e)),
                };
                raw.set_pending_token(&token);
            }
            Secret::OAuthClient { .. } | Secret::Bearer { .. } => {
                return Err(RotationError::NotRotatable(name.to_owned()));
            }
        }
        raw.set_claim(&claim.rotation_id, &self.owner, now);
        Ok(())
    }

    /// Deletes keys named `credbroker:<name>:…` that no document references.
    async fn sweep(
        &self,
        name: &str,
        admin: &TwilioCredential,
        raw: &RawDocument,
    ) -> Result<(), RotationError> {
        let prefix = key_prefix(name);
        let referenced = [
            raw.current_key_sid(),
            raw.pending_key_sid(),
            raw.previous_key_sid(),
        ];
        let keys = self
            .twilio
            .list_keys(admin)
            .await
            .map_err(|source| RotationError::Twilio {
                name: name.to_owned(),
                step: "list keys",
                source,
            })?;
        for key in keys {
            if key.friendly_name.starts_with(&prefix)
                && !referenced
                    .iter()
                    .any(|r| r.as_deref() == Some(key.sid.as_str()))
            {
                tracing::warn!(credential = %name, key = %key.sid, "deleting an orphaned key from an interrupted rotation");
                self.twilio
                    .delete_key(admin, &key.sid)
                    .await
                    .map_err(|source| RotationError::Twilio {
                        name: name.to_owned(),
                        step: "delete orphaned key",
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Step 3: the new value must work: the `validation_url` read with it.
    /// A key or secondary token just made can take a while to work at
    /// Twilio, which answers 20003 until then: that is retried with backoff
    /// until `propagation` has passed since the first try. Any other
    /// answer, or 20003 past `propagation`, fails the step; the document
    /// keeps `pending`, nothing is promoted, and the next attempt resumes.
    pub(super) async fn test(
        &self,
        name: &str,
        rotation: &RotationConfig,
        pending: &TwilioCredential,
    ) -> Result<(), RotationError> {
        let deadline = tokio::time::Instant::now() + rotation.propagation;
        let mut refusals = 0;
        loop {
            let result = self
                .twilio
                .validate(pending, &rotation.validation_url)
                .await;
            let refused = matches!(&result, Err(e) if e.is_authenticate());
            let now = tokio::time::Instant::now();
            match result {
                Ok(()) => return Ok(()),
                Err(_) if refused && now < deadline => {
                    refusals += 1;
                    let wait = crate::retry::backoff(
                        refusals,
                        PROPAGATION_FIRST_WAIT,
                        PROPAGATION_MAX_WAIT,
                    )
                    .min(deadline - now);
                    tracing::info!(
                        credential = %name,
                        refusals,
                        wait = %humantime::format_duration(wait),
                        "the new value is not accepted yet (Twilio 20003); waiting for it to propagate"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(source) => {
                    return Err(RotationError::Twilio {
                        name: name.to_owned(),
                        step: if refused {
                            "test new value (still refused when rotation.propagation ran out)"
                        } else {
                            "test new value"
                        },
                        source,
                    });
                }
            }
        }
    }

    /// After a failed test: a value still refused (20003) once
    /// `propagation` ran out counts one refused attempt in the document; at
    /// [`MAX_REFUSED_TESTS`] it is taken for one that will never work (its
    /// key deleted elsewhere, a secondary token replaced by another run):
    /// dropped from the document, then deleted at Twilio, and the reason
    /// logged. A crash between the two leaves an orphan that the next
    /// rotation deletes (keys by their name prefix; a secondary token is
    /// replaced when the next one is created). Other failures keep
    /// `pending` for the next attempt. Returns the error to report.
    pub(super) async fn refused_test(
        &self,
        name: &str,
        rotation: &RotationConfig,
        raw: &mut RawDocument,
        parsed: &CredentialDocument,
        version: &str,
        error: RotationError,
    ) -> RotationError {
        if !matches!(&error, RotationError::Twilio { source, .. } if source.is_authenticate()) {
            return error;
        }
        let attempts = raw.pending_refusals().saturating_add(1);
        if attempts < MAX_REFUSED_TESTS {
            raw.set_pending_refusals(attempts);
            // Best effort: a lost count only delays the way out.
            let _ = self.write(name, raw, version).await;
            return error;
        }
        let key = raw.pending_key_sid();
        raw.clear_pending();
        match self.write(name, raw, version).await {
            Ok(true) => {}
            Ok(false) => return error, // Someone else moved the document.
            Err(e) => return e,
        }
        let deleted = match (key, &parsed.current.secret) {
            (Some(sid), _) => match self.admin(name, rotation).await {
                Ok(admin) => self.twilio.delete_key(&admin, &sid).await,
                Err(e) => return e,
            },
            (None, Secret::AuthToken(_)) => {
                self.twilio.delete_secondary_token(&parsed.current).await
            }
            (None, _) => Ok(()),
        };
        if let Err(e) = &deleted {
            tracing::warn!(credential = %name, error = %e, "could not delete the dropped value at Twilio; the next rotation cleans it up");
        }
        let abandoned = RotationError::Abandoned {
            name: name.to_owned(),
            attempts,
            last: Box::new(error),
        };
        tracing::error!(credential = %name, attempts, error = %abandoned, "dropped a new value that never passed its test");
        abandoned
    }

    /// Step 5 at Twilio: delete the old key, or promote the secondary token.
    pub(super) async fn retire(
        &self,
        name: &str,
        rotation: &RotationConfig,
        kind: Kind,
        raw: &RawDocument,
        parsed: &CredentialDocument,
    ) -> Result<(), RotationError> {
        let twilio_err = |step, source| RotationError::Twilio {
            name: name.to_owned(),
            step,
            source,
        };
        match kind {
            Kind::AuthToken => match self.twilio.promote_secondary_token(&parsed.current).await {
                Ok(()) => Ok(()),
                // Promoted already (a crash before the write): the current
                // token must then work on its own.
                Err(TwilioError::Rejected { .. }) => self
                    .twilio
                    .validate(&parsed.current, &rotation.validation_url)
                    .await
                    .map_err(|e| twilio_err("check promoted token", e)),
                Err(e) => Err(twilio_err("promote secondary token", e)),
            },
            _ => match raw.previous_key_sid() {
                Some(sid) => {
                    let admin = self.admin(name, rotation).await?;
                    self.twilio
                        .delete_key(&admin, &sid)
                        .await
                        .map_err(|e| twilio_err("delete old key", e))
                }
                None => Ok(()),
            },
        }
    }
}
