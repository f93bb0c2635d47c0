//! Informers: typed, indexed caches of the replicated state, fed in log order by the state
//! machine's change feed, on every master (so a new leader's control loops start warm).
//!
//! One thread of its own (`informers`) takes the feed's entries and applies each change to the
//! cache of its kind, so decoding runs once per change and never on the async workers that
//! Raft and the API use. It starts from a consistent list-and-subscribe cut of the store;
//! when the feed ends its subscription (the thread fell behind the window, or a snapshot
//! replaced the state) it re-lists the same way and each cache diffs the list against what it
//! held, so a consumer never skips a change silently.
//!
//! [`Informers::wait_synced`] waits until the caches reflect a resource version: a control loop
//! that wrote through Raft reads its own writes from them.
//!
//! The caches themselves and the work queue are the `keelson-informer` crate's (`informer/`),
//! which the agent and the bench also feed, by list and watch. Here: this feeder, and one
//! projection per kind: `pod.rs`, `node.rs`, `replicationcontroller.rs`, `service.rs`, and
//! `rbac.rs` for RBAC's four kinds, which the API's authorizer reads, and `token.rs` for the
//! stored bearer tokens its authenticator reads.

pub mod node;
pub mod pod;
pub mod rbac;
pub mod replicationcontroller;
pub mod service;
pub mod token;

pub use keelson_informer::{cache, queue, remote};

use std::sync::Arc;
use std::time::Duration;

use keelson_raft::command::Record;
use keelson_raft::feed::EventKind;
use keelson_raft::store::Shared;
use tokio::sync::{watch, Notify};

pub use cache::{Cache, Facts, Item};
pub use node::NodeFacts;
pub use pod::PodFacts;
pub use rbac::{BindingFacts, RoleFacts};
pub use replicationcontroller::RcFacts;
pub use service::ServiceFacts;
pub use token::TokenFacts;

/// The caches of every kind the control plane reads through them.
pub struct Informers {
    pub pods: Arc<Cache<PodFacts>>,
    pub nodes: Arc<Cache<NodeFacts>>,
    pub rcs: Arc<Cache<RcFacts>>,
    pub services: Arc<Cache<ServiceFacts>>,
    /// RBAC's kinds, which the authorizer reads on every request.
    pub roles: Arc<Cache<RoleFacts<false>>>,
    pub cluster_roles: Arc<Cache<RoleFacts<true>>>,
    pub role_bindings: Arc<Cache<BindingFacts<false>>>,
    pub cluster_role_bindings: Arc<Cache<BindingFacts<true>>>,
    /// Stored bearer tokens, which every request bearing one is checked against.
    pub tokens: Arc<Cache<TokenFacts>>,
    /// The resource version the caches reflect.
    synced: watch::Receiver<u64>,
    /// Asks the feeding thread to report how far it has caught up.
    nudge: Arc<Notify>,
}

impl Informers {
    /// Starts feeding the caches from `store` on a thread of their own; it runs until the
    /// store's feed closes.
    pub fn start(store: Arc<Shared>) -> Arc<Self> {
        let (tx, synced) = watch::channel(0);
        let informers = Arc::new(Informers {
            pods: Default::default(),
            nodes: Default::default(),
            rcs: Default::default(),
            services: Default::default(),
            roles: Default::default(),
            cluster_roles: Default::default(),
            role_bindings: Default::default(),
            cluster_role_bindings: Default::default(),
            tokens: Default::default(),
            synced,
            nudge: Arc::new(Notify::new()),
        });
        let feeder = informers.clone();
        std::thread::Builder::new()
            .name("informers".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the informers' runtime");
                rt.block_on(feeder.feed(store, tx));
            })
            .expect("the informers' thread");
        informers
    }

    /// Waits until the caches reflect resource version `rv` (at most `timeout`); false when
    /// they did not get there in time.
    pub async fn wait_synced(&self, rv: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut synced = self.synced.clone();
        loop {
            if *synced.borrow_and_update() >= rv {
                return true;
            }
            // Entries that changed nothing (a new leader's blank entry) bring no event to wake
            // the feeder: ask it where it stands.
            self.nudge.notify_one();
            let step = (deadline - tokio::time::Instant::now()).min(Duration::from_millis(10));
            if step.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(step, synced.changed()).await;
        }
    }

    async fn feed(self: Arc<Self>, store: Arc<Shared>, synced: watch::Sender<u64>) {
        loop {
            let (records, rv, mut sub) = store.list_and_subscribe("/registry/");
            self.replace_all(records);
            synced.send_replace(rv);
            loop {
                let events = tokio::select! {
                    events = sub.next_index() => events,
                    _ = self.nudge.notified() => Ok(Vec::new()),
                };
                match events {
                    Ok(events) => {
                        for e in events {
                            let record = (e.kind != EventKind::Deleted).then(|| Record {
                                value: e.value.clone(),
                                // Caches do not serve creation versions.
                                create_rv: 0,
                                mod_rv: e.rv,
                            });
                            self.apply(&e.key, record);
                        }
                        synced.send_replace(sub.position());
                    }
                    Err(keelson_raft::feed::WatchEnd::Closed) => return,
                    Err(end) => {
                        tracing::info!("informers: {end}; re-listing");
                        break;
                    }
                }
            }
        }
    }

    fn apply(&self, key: &str, record: Option<Record>) {
        match plural_of(key) {
            Some(PodFacts::PLURAL) => self.pods.apply(key, record),
            Some(NodeFacts::PLURAL) => self.nodes.apply(key, record),
            Some(RcFacts::PLURAL) => self.rcs.apply(key, record),
            Some(ServiceFacts::PLURAL) => self.services.apply(key, record),
            Some(RoleFacts::<false>::PLURAL) => self.roles.apply(key, record),
            Some(RoleFacts::<true>::PLURAL) => self.cluster_roles.apply(key, record),
            Some(BindingFacts::<false>::PLURAL) => self.role_bindings.apply(key, record),
            Some(BindingFacts::<true>::PLURAL) => self.cluster_role_bindings.apply(key, record),
            Some(TokenFacts::PLURAL) => self.tokens.apply(key, record),
            _ => {}
        }
    }

    fn replace_all(&self, records: Vec<(String, Record)>) {
        let (mut pods, mut nodes, mut rcs, mut services) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rbac: [Vec<(String, Record)>; 4] = Default::default();
        let mut tokens = Vec::new();
        for (key, record) in records {
            match plural_of(&key) {
                Some(PodFacts::PLURAL) => pods.push((key, record)),
                Some(NodeFacts::PLURAL) => nodes.push((key, record)),
                Some(RcFacts::PLURAL) => rcs.push((key, record)),
                Some(ServiceFacts::PLURAL) => services.push((key, record)),
                Some(RoleFacts::<false>::PLURAL) => rbac[0].push((key, record)),
                Some(RoleFacts::<true>::PLURAL) => rbac[1].push((key, record)),
                Some(BindingFacts::<false>::PLURAL) => rbac[2].push((key, record)),
                Some(BindingFacts::<true>::PLURAL) => rbac[3].push((key, record)),
                Some(TokenFacts::PLURAL) => tokens.push((key, record)),
                _ => {}
            }
        }
        let [roles, cluster_roles, role_bindings, cluster_role_bindings] = rbac;
        self.roles.replace(roles);
        self.cluster_roles.replace(cluster_roles);
        self.role_bindings.replace(role_bindings);
        self.cluster_role_bindings.replace(cluster_role_bindings);
        self.tokens.replace(tokens);
        // Nodes, controllers and services first: a pod's handlers may look them up.
        self.nodes.replace(nodes);
        self.rcs.replace(rcs);
        self.services.replace(services);
        self.pods.replace(pods);
    }
}

/// The resource of a storage key (`/registry/pods/…` → `pods`).
fn plural_of(key: &str) -> Option<&str> {
    key.strip_prefix("/registry/")?.split('/').next()
}
