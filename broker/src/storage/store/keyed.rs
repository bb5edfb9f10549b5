//! The keyed records: retained messages, persistent sessions and pending
//! incoming QoS 2 ids (the last record for a key wins; every live one
//! counts against the budget, invariant 4 in `store/mod.rs`).

use super::*;

impl<F: Durable> Store<F> {
    /// Sets (or replaces) the retained message of its topic.
    pub fn set_retained(&mut self, mut msg: StoredMessage) -> Result<(), StoreError> {
        msg.destinations.clear();
        let replaces = self.retained.get(&msg.topic).copied();
        let rec = Record::RetainedSet(msg);
        self.ensure_room_for_keyed(&rec, replaces)?;
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Clears the retained message of `topic` (no-op when there is none).
    pub fn clear_retained(&mut self, topic: &str) -> Result<(), StoreError> {
        if !self.retained.contains_key(topic) {
            return Ok(());
        }
        let rec = Record::RetainedClear {
            topic: topic.to_string(),
        };
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Every retained message.
    pub fn retained(&mut self) -> Result<Vec<StoredMessage>, StoreError> {
        let locs: Vec<Loc> = self.retained.values().copied().collect();
        let mut out = Vec::with_capacity(locs.len());
        for loc in locs {
            if let Record::RetainedSet(m) = self.read_record(loc)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Saves (or replaces) a persistent session's state.
    pub fn save_session(&mut self, session: StoredSession) -> Result<(), StoreError> {
        let replaces = self.sessions.get(&session.client_id).copied();
        let rec = Record::session_save(session);
        self.ensure_room_for_keyed(&rec, replaces)?;
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Forgets a session's state (its queued messages are acked separately).
    pub fn remove_session(&mut self, client_id: &str) -> Result<(), StoreError> {
        let has_qos2 = self.qos2.keys().any(|(c, _)| c == client_id);
        if !self.sessions.contains_key(client_id) && !has_qos2 {
            return Ok(());
        }
        let rec = Record::SessionRemove {
            client_id: client_id.to_string(),
        };
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Records an incoming QoS 2 packet id as pending or released.
    pub fn set_qos2(
        &mut self,
        client_id: &str,
        pkid: u16,
        pending: bool,
    ) -> Result<(), StoreError> {
        let known = self.qos2.contains_key(&(client_id.to_string(), pkid));
        if known == pending {
            return Ok(());
        }
        let rec = Record::Qos2Incoming {
            client_id: client_id.to_string(),
            pkid,
            pending,
        };
        if pending {
            self.ensure_room_for_keyed(&rec, None)?;
        }
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Pending incoming QoS 2 packet ids by client.
    pub fn qos2_pending(&self) -> HashMap<String, Vec<u16>> {
        let mut out: HashMap<String, Vec<u16>> = HashMap::new();
        for (client, pkid) in self.qos2.keys() {
            out.entry(client.clone()).or_default().push(*pkid);
        }
        out
    }

    /// Every saved session.
    pub fn sessions(&mut self) -> Result<Vec<StoredSession>, StoreError> {
        let locs: Vec<Loc> = self.sessions.values().copied().collect();
        let mut out = Vec::with_capacity(locs.len());
        for loc in locs {
            if let Some(s) = self.read_record(loc)?.into_session() {
                out.push(s);
            }
        }
        Ok(out)
    }
}
