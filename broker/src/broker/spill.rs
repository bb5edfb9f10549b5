//! Paging a spilled backlog back in: the one routine connections and bridge
//! lanes share.
//!
//! A persistent session whose mailbox overflowed is in *spill mode*: its
//! newest messages are only in the store. Its consumer (a connection task
//! or a bridge link) reads them back a page at a time, from the position
//! `Mailbox::spill_state` reports, with `Persistence::fetch`, and hands each
//! page to [`page_in`]. Invariants: deliveries are built for the session's
//! current subscriptions (`durable::delivery_for`), in store order; a page
//! shorter than asked ends spill mode (the backlog is all in RAM again).

use std::sync::Arc;

use crate::message::Message;
use crate::session::Session;

use super::durable::delivery_for;

/// Puts one page of `session`'s spilled backlog (read with at most
/// `page_size` messages, at spill sequence `seq`) back into its mailbox.
pub fn page_in(session: &Session, messages: Vec<Message>, seq: u64, page_size: usize) {
    let complete = messages.len() < page_size;
    let page = messages
        .into_iter()
        .map(|m| delivery_for(session, Arc::new(m)))
        .collect();
    session.mailbox.refill(page, seq, complete);
}
