//! CA switches: the state a change of `enabledBackend` leads to (both roots trusted while the
//! switch is in flight), its record in the store so a restart resumes it, and its end.

use super::*;

impl Manager {
    pub(super) fn next_state(
        &self,
        name: &MeshName,
        source: &str,
        old: Option<&Arc<MeshState>>,
        enabled: Option<Arc<ActiveBackend>>,
        resumed: Option<Previous>,
    ) -> Result<MeshState, Error> {
        let same = match (old.and_then(|o| o.enabled.as_ref()), enabled.as_ref()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let mut previous = old.and_then(|o| o.previous.clone()).or(resumed);
        let generation = if same {
            old.map_or(0, |o| o.generation)
        } else {
            if let Some(old_backend) = old.and_then(|o| o.enabled.clone()) {
                let differs = enabled
                    .as_ref()
                    .is_none_or(|n| n.bundle.certs() != old_backend.bundle.certs());
                if differs {
                    previous = Some(Previous {
                        keep_until: SystemTime::now() + old_backend.lifetime,
                        backend: old_backend,
                    });
                }
            }
            let mut g = lock(&self.next_generation);
            *g += 1;
            *g
        };
        // Switching back to the backend that was previous ends the switch.
        if let (Some(p), Some(e)) = (&previous, &enabled) {
            if p.backend.bundle.certs() == e.bundle.certs() {
                previous = None;
            }
        }
        let bundle = merged_bundle(enabled.as_ref(), previous.as_ref())?;
        Ok(MeshState {
            name: name.clone(),
            generation,
            enabled,
            previous,
            bundle_pem: bundle.as_ref().map(TrustBundle::to_pem),
            bundle,
            source: source.to_owned(),
        })
    }

    /// The switch in flight that a previous process recorded for `mesh`, if its old backend is
    /// still configured and its roots must still be trusted.
    pub(super) async fn resume_switch(
        &self,
        mesh: &Mesh,
        enabled: Option<&Arc<ActiveBackend>>,
    ) -> Option<Previous> {
        let name = switch_record_name(&mesh.name)?;
        let record = self
            .ctx
            .store
            .get(ca_core::Scope::Mesh(&mesh.name), &name)
            .await
            .ok()??;
        let (backend_name, keep_until) = parse_switch_record(record.expose_str()?)?;
        if keep_until <= SystemTime::now()
            || enabled.is_some_and(|e| e.name.as_str() == backend_name)
        {
            return None;
        }
        let mtls = mesh.mtls.as_ref()?;
        let (index, backend) = mtls
            .backends
            .iter()
            .enumerate()
            .find(|(_, b)| b.name.as_str() == backend_name)?;
        let key = cache_key(mesh, backend);
        let cached = lock(&self.cache).get(&key).cloned();
        let built = match cached {
            Some(a) => Ok(a),
            None => {
                self.build_backend(&self.ctx, mesh, index, backend, key.2.clone())
                    .await
            }
        };
        match built {
            Ok(a) => {
                lock(&self.cache).insert(key, a.clone());
                tracing::info!(mesh = %mesh.name, old_backend = %a.name, "resuming a CA switch in flight: both roots stay trusted");
                Some(Previous {
                    backend: a,
                    keep_until,
                })
            }
            Err(e) => {
                tracing::warn!(mesh = %mesh.name, old_backend = backend_name, error = %e, "cannot rebuild the backend of a CA switch in flight; its roots leave the bundle");
                None
            }
        }
    }

    /// Persists the start or the end of a switch, so a restart resumes it.
    pub(super) async fn record_switch(
        &self,
        old: Option<&MeshState>,
        new: &MeshState,
    ) -> Result<(), Error> {
        let was = old
            .and_then(|o| o.previous.as_ref())
            .map(|p| p.backend.name.as_str());
        let is = new.previous.as_ref().map(|p| p.backend.name.as_str());
        if was == is {
            return Ok(());
        }
        let Some(name) = switch_record_name(&new.name) else {
            return Ok(());
        };
        let value = match &new.previous {
            Some(p) => format!(
                "previous={}\nkeep_until={}\n",
                p.backend.name,
                p.keep_until
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
            ),
            None => "none\n".to_owned(),
        };
        self.ctx
            .store
            .put(ca_core::Scope::Mesh(&new.name), &name, value.as_bytes())
            .await
    }

    /// Ends switches whose old backend is no longer needed: every watched identity moved to the
    /// new backend and every certificate the old one issued has expired.
    pub async fn finish_switches(&self) {
        let snapshot = self.snapshot();
        let now = SystemTime::now();
        let mut next: Option<BTreeMap<String, Arc<MeshState>>> = None;
        for (name, state) in snapshot.iter() {
            let Some(prev) = &state.previous else {
                continue;
            };
            let watched = lock(&self.watched_on)
                .get(&(name.clone(), prev.backend.name.to_string()))
                .copied()
                .unwrap_or(0);
            let same_name_enabled = state
                .enabled
                .as_ref()
                .is_some_and(|e| e.name == prev.backend.name);
            if now < prev.keep_until || (watched > 0 && !same_name_enabled) {
                continue;
            }
            let Ok(bundle) = merged_bundle(state.enabled.as_ref(), None) else {
                continue;
            };
            tracing::info!(mesh = %name, old_backend = %prev.backend.name, "CA switch complete; old roots leave the trust bundle");
            let map = next.get_or_insert_with(|| (*snapshot).clone());
            map.insert(
                name.clone(),
                Arc::new(MeshState {
                    name: state.name.clone(),
                    generation: state.generation,
                    enabled: state.enabled.clone(),
                    previous: None,
                    bundle_pem: bundle.as_ref().map(TrustBundle::to_pem),
                    bundle,
                    source: state.source.clone(),
                }),
            );
        }
        if let Some(map) = next {
            for state in map.values() {
                if let Some(old) = snapshot.get(state.name.as_str()) {
                    if let Err(e) = self.record_switch(Some(old), state).await {
                        tracing::warn!(mesh = %state.name, error = %e, "cannot record the end of the CA switch");
                    }
                }
            }
            self.publish(map);
        }
    }
}

pub(super) fn merged_bundle(
    enabled: Option<&Arc<ActiveBackend>>,
    previous: Option<&Previous>,
) -> Result<Option<TrustBundle>, Error> {
    let bundles: Vec<&TrustBundle> = enabled
        .map(|e| &e.bundle)
        .into_iter()
        .chain(previous.map(|p| &p.backend.bundle))
        .collect();
    if bundles.is_empty() {
        return Ok(None);
    }
    TrustBundle::merge(bundles).map(Some)
}

/// The secret that records a CA switch in flight for `mesh`.
fn switch_record_name(mesh: &MeshName) -> Option<ca_core::SecretName> {
    ca_core::SecretName::new(format!("{mesh}.meshca-ca-switch")).ok()
}

/// `previous=<backend>` and `keep_until=<unix seconds>`; `None` for `none` or anything else.
fn parse_switch_record(text: &str) -> Option<(&str, SystemTime)> {
    let mut previous = None;
    let mut keep_until = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("previous", v)) => previous = Some(v.trim()),
            Some(("keep_until", v)) => {
                keep_until = v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
            }
            _ => {}
        }
    }
    Some((previous?, keep_until?))
}
