//! The registry of each device's realtime connections on this node, so that
//! removing a device closes them. It holds no connection alive and keeps no
//! entry for a connection that is gone: each entry lives exactly as long as
//! its [`Registration`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

type ConnKey = (String, String);

/// A realtime connection that can be closed because its device was removed
/// (the session layer closes it with [`DeviceRevoked`](lockstep_protocol::ErrorCode::DeviceRevoked)).
pub(crate) trait Revocable: Send + Sync {
    /// Closes the connection; its device was removed from the account.
    fn revoke(&self);
}

/// Each device's live connections. An entry lives exactly as long as its
/// [`Registration`]; a device with none has no key.
#[derive(Default)]
struct Registry {
    next_id: u64,
    by_device: HashMap<ConnKey, Vec<Registered>>,
}

/// A registration id and its connection.
type Registered = (u64, Weak<dyn Revocable>);

/// A connection's entry in the registry of its device's connections; dropping
/// it removes the entry (and the device's, once it has no connection left).
#[must_use = "the connection is registered only while its Registration is held"]
pub(crate) struct Registration {
    registry: Weak<Mutex<Registry>>,
    key: ConnKey,
    id: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("user", &self.key.0).field("device", &self.key.1).finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else { return };
        let mut reg = lock(&registry);
        if let Some(list) = reg.by_device.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                reg.by_device.remove(&self.key);
            }
        }
    }
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// See the module docs. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Connections {
    registry: Arc<Mutex<Registry>>,
}

impl Connections {
    /// Registers a connection of `user`'s `device_id` while the returned
    /// [`Registration`] is held.
    pub(super) fn register(&self, user: &str, device_id: &str, conn: Weak<dyn Revocable>) -> Registration {
        let key = (user.to_owned(), device_id.to_owned());
        let mut reg = lock(&self.registry);
        reg.next_id += 1;
        let id = reg.next_id;
        reg.by_device.entry(key.clone()).or_default().push((id, conn));
        Registration { registry: Arc::downgrade(&self.registry), key, id }
    }

    /// Revokes the live connections of `user`'s `device_id`; returns how many.
    pub(super) fn close(&self, user: &str, device_id: &str) -> usize {
        let conns = lock(&self.registry).by_device.remove(&(user.to_owned(), device_id.to_owned())).unwrap_or_default();
        let mut closed = 0;
        for c in conns.iter().filter_map(|(_, c)| c.upgrade()) {
            c.revoke();
            closed += 1;
        }
        closed
    }

    /// Whether `user`'s `device_id` has a live connection here.
    pub(super) fn is_connected(&self, user: &str, device_id: &str) -> bool {
        lock(&self.registry)
            .by_device
            .get(&(user.to_owned(), device_id.to_owned()))
            .is_some_and(|list| list.iter().any(|(_, c)| c.strong_count() > 0))
    }

    /// (devices, connections) registered.
    pub(super) fn counts(&self) -> (usize, usize) {
        let reg = lock(&self.registry);
        (reg.by_device.len(), reg.by_device.values().map(Vec::len).sum())
    }
}
