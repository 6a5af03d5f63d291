//! The filter table: every distinct XPath expression the feeds sent, compiled once and counted
//! by the feeds that use it, so each is evaluated once per event; and setting or releasing one
//! feed's filters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::filter::{FilterEngine, FilterId};
use crate::output::{ConnId, Event};

use super::{Conn, Kind, Node};

#[derive(Debug)]
pub(super) struct FilterTable {
    pub(super) engine: Box<dyn FilterEngine + Send>,
    pub(super) by_expr: HashMap<Arc<str>, FilterId>,
    pub(super) by_id: BTreeMap<FilterId, (Arc<str>, u32)>,
    pub(super) feeds_with_filters: usize,
    pub(super) ids: Vec<FilterId>,
    pub(super) verdicts: Vec<bool>,
}

#[derive(Debug, Default)]
pub(super) enum FeedFilters {
    #[default]
    None,
    Some(Vec<FilterId>),
    AllRefused,
}

impl Node {
    pub(super) fn set_filters(&mut self, conn: ConnId, exprs: &[&str]) {
        let limits = self.config.limits;
        let ft = &mut self.filters;
        let mut ids = Vec::new();
        let mut refused = Vec::new();
        for (i, expr) in exprs.iter().enumerate() {
            if i >= limits.filters_per_feed_max {
                refused.push((
                    (*expr).to_owned(),
                    format!(
                        "more than {} filters sent; the rest are ignored",
                        limits.filters_per_feed_max
                    ),
                ));
                continue;
            }
            if expr.len() > limits.filter_len_max {
                refused.push((
                    truncate(expr, 80),
                    format!(
                        "filter is {} bytes, over the limit of {}",
                        expr.len(),
                        limits.filter_len_max
                    ),
                ));
                continue;
            }
            let id = match ft.by_expr.get(*expr) {
                Some(&id) => id,
                None => match ft.engine.compile(expr) {
                    Ok(id) => {
                        let key: Arc<str> = Arc::from(*expr);
                        ft.by_expr.insert(key.clone(), id);
                        ft.by_id.insert(id, (key, 0));
                        id
                    }
                    Err(e) => {
                        refused.push(((*expr).to_owned(), e.reason));
                        continue;
                    }
                },
            };
            if ids.contains(&id) {
                continue;
            }
            if let Some(entry) = ft.by_id.get_mut(&id) {
                entry.1 += 1;
            }
            ids.push(id);
        }
        let accepted = ids.len();
        let filters: Vec<Arc<str>> = ids
            .iter()
            .filter_map(|id| ft.by_id.get(id).map(|(expr, _)| expr.clone()))
            .collect();
        let new = if !ids.is_empty() {
            FeedFilters::Some(ids)
        } else if exprs.is_empty() {
            FeedFilters::None
        } else {
            FeedFilters::AllRefused
        };
        let old = match self.conns.get_mut(&conn) {
            Some(Conn {
                kind: Kind::Feed(feed),
                ..
            }) => std::mem::replace(&mut feed.filters, new),
            _ => new,
        };
        if !matches!(self.filters_of(conn), Some(FeedFilters::None) | None) {
            self.filters.feeds_with_filters += 1;
        }
        self.release_filters(old);
        self.events.push_back(Event::FiltersSet {
            conn,
            accepted,
            filters,
            refused,
        });
    }

    fn filters_of(&self, conn: ConnId) -> Option<&FeedFilters> {
        match self.conns.get(&conn) {
            Some(Conn {
                kind: Kind::Feed(feed),
                ..
            }) => Some(&feed.filters),
            _ => None,
        }
    }

    pub(super) fn release_filters(&mut self, filters: FeedFilters) {
        let ft = &mut self.filters;
        match filters {
            FeedFilters::None => return,
            FeedFilters::AllRefused => {}
            FeedFilters::Some(ids) => {
                for id in ids {
                    let gone = match ft.by_id.get_mut(&id) {
                        Some(entry) => {
                            entry.1 = entry.1.saturating_sub(1);
                            entry.1 == 0
                        }
                        None => false,
                    };
                    if gone {
                        if let Some((expr, _)) = ft.by_id.remove(&id) {
                            ft.by_expr.remove(&expr);
                        }
                        ft.engine.release(id);
                    }
                }
            }
        }
        ft.feeds_with_filters = ft.feeds_with_filters.saturating_sub(1);
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
