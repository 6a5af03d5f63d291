//! The latest events, as the status page shows them: read from a source attached to the
//! [`Metrics`](super::Metrics) ([`Metrics::attach_recent_events`](super::Metrics::attach_recent_events)),
//! the node's archive. The page asks on each load, from the HTTP thread (never the loop's).

/// One event on the status page (the archive's metadata of it).
#[derive(Debug, Clone, PartialEq)]
pub struct PageEvent {
    /// The node-local sequence number (its XML is at `/api/events/SEQ`).
    pub seq: u64,
    /// When the node received it, in milliseconds since the UNIX epoch.
    pub received_unix_ms: i64,
    /// Its IVORN (peer input: the page escapes it).
    pub ivorn: String,
    /// Its role: `observation`, `test` or `utility`.
    pub role: String,
    /// Its stream: the IVORN's authority and path (`nasa.gsfc.gcn/SWIFT`).
    pub stream: String,
    /// Its WhereWhen position, if it has one.
    pub position: Option<SkyPosition>,
    /// Its signature status (or signer), where signatures are checked.
    pub signature: Option<String>,
}

/// A position on the sky, in degrees (ICRS).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkyPosition {
    /// Right ascension, 0 to 360.
    pub ra: f64,
    /// Declination, -90 to 90.
    pub dec: f64,
    /// The error radius, if given.
    pub error: Option<f64>,
}

/// Where the status page reads the latest events from (the archive). Called on the HTTP
/// thread for each page load; may block briefly (a database query). An error is shown on the
/// page in place of the events.
pub trait RecentEvents: Send + Sync {
    /// The latest `limit` events, newest first.
    ///
    /// # Errors
    ///
    /// What went wrong, in a sentence for the page (the database cannot be read, ...).
    fn latest(&self, limit: usize) -> Result<Vec<PageEvent>, String>;

    /// The latest `limit` events that have a position, newest first (the sky map's marks).
    /// By default, those among the latest `limit` events; a source with an index on positions
    /// should answer this itself.
    ///
    /// # Errors
    ///
    /// As [`RecentEvents::latest`].
    fn positioned(&self, limit: usize) -> Result<Vec<PageEvent>, String> {
        let mut events = self.latest(limit)?;
        events.retain(|e| e.position.is_some());
        Ok(events)
    }
}

/// A closure from a limit to the latest events is a source.
impl<F> RecentEvents for F
where
    F: Fn(usize) -> Result<Vec<PageEvent>, String> + Send + Sync,
{
    fn latest(&self, limit: usize) -> Result<Vec<PageEvent>, String> {
        self(limit)
    }
}

/// The status page's latest events and sky-map marks come from the archive.
#[cfg(feature = "archive")]
impl RecentEvents for crate::archive::Readers {
    fn latest(&self, limit: usize) -> Result<Vec<PageEvent>, String> {
        page_events(self.recent(limit, false))
    }

    fn positioned(&self, limit: usize) -> Result<Vec<PageEvent>, String> {
        page_events(self.recent(limit, true))
    }
}

#[cfg(feature = "archive")]
fn page_events(
    rows: Result<Vec<crate::archive::Recent>, crate::archive::QueryError>,
) -> Result<Vec<PageEvent>, String> {
    let rows = rows.map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|r| PageEvent {
            seq: r.seq,
            received_unix_ms: r.received_ms,
            ivorn: r.ivorn,
            role: r.role,
            stream: r.stream,
            position: r
                .position
                .map(|(ra, dec, error)| SkyPosition { ra, dec, error }),
            signature: r.signature,
        })
        .collect())
}
