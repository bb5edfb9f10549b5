//! The subscription trie: topic filters split on `/`, one node per level.
//!
//! Matching a topic walks the levels once, following the exact child, the
//! `+` child and collecting `#` children, so its cost depends on the depth
//! of the topic and the number of wildcard branches, not on the number of
//! subscriptions. Topics starting with `$` are not matched by a `+` or `#`
//! in the first level (MQTT 5.0 section 4.7.2).
//!
//! Shared subscriptions (`$share/group/filter`) are stored at the node of
//! their filter, one [`Group`] per group name; a match yields the group, and
//! the caller picks one member with [`Group::pick`] (round robin, preferring
//! online members).

/// Topic levels are hashed on every publish: foldhash is several times
/// faster than SipHash on short keys and still seeded per process, so
/// crafted subscriptions cannot aim at a known hash function.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::message::SubscriptionOptions;

pub mod listing;
use crate::session::Mailbox;

/// A subscriber at a trie node: its mailbox and options.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub mailbox: Arc<Mailbox>,
    pub options: SubscriptionOptions,
}

/// The members of one shared subscription group on one filter.
#[derive(Debug)]
pub struct Group {
    /// (group name, filter), shared with the deliveries picked from it.
    key: Arc<(String, String)>,
    members: Vec<Subscriber>,
    cursor: AtomicUsize,
}

impl Group {
    /// (group name, filter) of this group.
    pub fn key(&self) -> &Arc<(String, String)> {
        &self.key
    }

    /// The next member in round-robin order, skipping offline members
    /// unless every member is offline.
    pub fn pick(&self) -> Option<&Subscriber> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let online = (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|s| s.mailbox.is_online());
        online.or_else(|| self.members.get(start % n))
    }
}

/// One level of the trie.
#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    subscribers: HashMap<Arc<str>, Subscriber>,
    groups: HashMap<String, Group>,
    /// Whether `children` holds `+` / `#`: most nodes have neither, and the
    /// flags spare two hash lookups per level on every publish.
    has_plus: bool,
    has_hash: bool,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }

    /// Refreshes the wildcard flags after `children` changed.
    fn update_wildcards(&mut self) {
        self.has_plus = self.children.contains_key("+");
        self.has_hash = self.children.contains_key("#");
    }
}

/// A match found for a topic.
pub enum Match<'a> {
    /// A plain subscription.
    Direct(&'a Subscriber),
    /// A shared subscription group: deliver to one member.
    Shared(&'a Group),
}

/// The subscription trie.
#[derive(Debug, Default)]
pub struct Trie {
    root: Node,
    count: usize,
}

impl Trie {
    /// Number of subscriptions (each shared group member counts once).
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces the subscription of `subscriber` to `filter` (in
    /// `group` when shared). Returns true when it replaced an existing one.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, subscriber: Subscriber) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node.has_plus |= level == "+";
            node.has_hash |= level == "#";
            node = node.children.entry(level.to_string()).or_default();
        }
        let existed = match group {
            None => {
                let key = subscriber.mailbox.client_id().clone();
                node.subscribers.insert(key, subscriber).is_some()
            }
            Some(name) => {
                let group = node
                    .groups
                    .entry(name.to_string())
                    .or_insert_with(|| Group {
                        key: Arc::new((name.to_string(), filter.to_string())),
                        members: Vec::new(),
                        cursor: AtomicUsize::new(0),
                    });
                let id = subscriber.mailbox.client_id();
                match group
                    .members
                    .iter_mut()
                    .find(|m| m.mailbox.client_id() == id)
                {
                    Some(existing) => {
                        *existing = subscriber;
                        true
                    }
                    None => {
                        group.members.push(subscriber);
                        false
                    }
                }
            }
        };
        if !existed {
            self.count += 1;
        }
        existed
    }

    /// Removes `client_id`'s subscription to `filter` (in `group` when
    /// shared), pruning empty nodes. Returns true when it existed.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, client_id: &str) -> bool {
        self.remove_owned(filter, group, client_id, None)
    }

    /// Like [`Trie::remove`], but when `owner` is given only removes the
    /// subscription if it still belongs to that mailbox (a newer session
    /// with the same client id may have replaced it).
    pub fn remove_owned(
        &mut self,
        filter: &str,
        group: Option<&str>,
        client_id: &str,
        owner: Option<&Mailbox>,
    ) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let target = Target { client_id, owner };
        let removed = remove_at(&mut self.root, &levels, group, &target);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// The shared group `group` on exactly `filter`.
    pub fn group(&self, filter: &str, group: &str) -> Option<&Group> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.children.get(level)?;
        }
        node.groups.get(group)
    }

    /// Calls `visit` for every subscription matching `topic`.
    pub fn matches<'a>(&'a self, topic: &str, mut visit: impl FnMut(Match<'a>)) {
        let dollar = topic.starts_with('$');
        walk(&self.root, Some(topic), true, dollar, &mut visit);
    }
}

/// Which subscription to remove.
struct Target<'a> {
    client_id: &'a str,
    owner: Option<&'a Mailbox>,
}

impl Target<'_> {
    fn matches(&self, s: &Subscriber) -> bool {
        &**s.mailbox.client_id() == self.client_id
            && self
                .owner
                .is_none_or(|o| std::ptr::eq(Arc::as_ptr(&s.mailbox), o))
    }
}

fn remove_at(node: &mut Node, levels: &[&str], group: Option<&str>, target: &Target) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => match node.subscribers.get(target.client_id) {
                Some(s) if target.matches(s) => node.subscribers.remove(target.client_id).is_some(),
                _ => false,
            },
            Some(name) => {
                let Some(g) = node.groups.get_mut(name) else {
                    return false;
                };
                let before = g.members.len();
                g.members.retain(|m| !target.matches(m));
                let removed = g.members.len() != before;
                if g.members.is_empty() {
                    node.groups.remove(name);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_at(child, rest, group, target);
    if child.is_empty() {
        node.children.remove(*first);
        node.update_wildcards();
    }
    removed
}

fn visit_node<'a>(node: &'a Node, visit: &mut impl FnMut(Match<'a>)) {
    node.subscribers
        .values()
        .for_each(|s| visit(Match::Direct(s)));
    node.groups.values().for_each(|g| visit(Match::Shared(g)));
}

/// Visits the subscriptions under `node` matching `rest`, the topic levels
/// not consumed yet (`None` once every level is). Splits the topic as it
/// goes, so matching allocates nothing.
fn walk<'a>(
    node: &'a Node,
    rest: Option<&str>,
    top: bool,
    dollar: bool,
    visit: &mut impl FnMut(Match<'a>),
) {
    // `$` topics are not matched by wildcards at the first level.
    let wildcards_allowed = !(top && dollar);
    if wildcards_allowed && node.has_hash {
        // `#` matches the parent level and everything below it.
        if let Some(hash) = node.children.get("#") {
            visit_node(hash, visit);
        }
    }
    let Some(rest) = rest else {
        visit_node(node, visit);
        return;
    };
    if node.children.is_empty() {
        return;
    }
    let (level, tail) = match rest.split_once('/') {
        Some((level, tail)) => (level, Some(tail)),
        None => (rest, None),
    };
    if let Some(child) = node.children.get(level) {
        walk(child, tail, false, dollar, visit);
    }
    if wildcards_allowed && node.has_plus {
        if let Some(plus) = node.children.get("+") {
            walk(plus, tail, false, dollar, visit);
        }
    }
}
