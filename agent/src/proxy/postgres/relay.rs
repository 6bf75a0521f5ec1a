//! The query loop of a PostgreSQL session, after startup: every client
//! message is parsed, every statement decided by the grant's policy and
//! audited before it is forwarded, and every response message that can carry
//! data is masked before the client sees it.
//!
//! Two halves run concurrently:
//! - **client → upstream** decides. Allowed messages are forwarded byte for
//!   byte; a refused statement is never forwarded: the client gets an
//!   `ErrorResponse` (SQLSTATE 42501) at the point of the stream where the
//!   server's answer would have been, and, inside an extended-protocol batch,
//!   the rest of the batch is discarded up to `Sync` as the server itself
//!   does after an error. In its place Warden sends the upstream an
//!   `Execute` of a portal that does not exist, whose error (never shown to
//!   the client) has the server's own effect of an error: an open
//!   transaction block is aborted, an implicit one (the rest of an
//!   extended batch) rolled back, so what surrounded the refused statement
//!   commits, or not, exactly as if the server had rejected it.
//!   A statement of an `approve` rule is held until an approver decides:
//!   a simple Query as a whole, an extended-protocol statement at the
//!   first Execute of each bound portal, showing the values bound to it.
//!   Portals and SQL cursors are run (Execute, FETCH, MOVE) only under a
//!   name Warden saw bound or declared in the transaction still open (see
//!   [`Ends`]): a cursor opened by code Warden trusts is never read.
//!   FunctionCall and simple Query are refused inside an unfinished batch.
//! - **upstream → client** masks and summarises. For each forwarded message
//!   that the server answers, the client half first queues an [`Expect`];
//!   the upstream half pops them as the answers arrive, so it always knows
//!   which statement (and which columns) a `DataRow` belongs to. Refusals are
//!   queued the same way, so they reach the client in order with the
//!   answers to earlier pipelined messages.
//!
//! When the client half ends on a protocol error, the upstream half is
//! given a few seconds to deliver the queued FATAL error before the session
//! closes.
//!
//! Memory per session is bounded by the largest single message
//! (`max_message_bytes`) plus small buffers: results are streamed message by
//! message, never collected.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use tracing::warn;

use super::SessionInfo;
use super::catalog::Origin;
use super::decide::{Answer, Decided, Decider};
use crate::audit::event::{ResultSummary, StatementDecision, StatementPhase};
use crate::masking::{Masked, Masker, Strategy};
use crate::protocol::postgres::backend::{self, BackendMessage, FieldDescription};
use crate::protocol::postgres::frame::{self, Frame, decode_frame};
use crate::protocol::postgres::frontend::{self, FrontendMessage, Target as DescribeTarget};
use crate::protocol::postgres::{CodecError, DataRowScanner};

/// The message of an error or notice whose text was withheld.
const WITHHELD: &str = "Warden: the server's message is withheld because the statement reads masked columns (SQLSTATE kept)";
/// Rows kept (masked) in a statement's result summary.
const SAMPLE_ROWS: usize = 3;
/// Longest value kept in a result summary, in characters.
const SAMPLE_VALUE_CHARS: usize = 200;
/// Flush buffered output once it holds this much.
const FLUSH_BYTES: usize = 64 * 1024;
/// Messages longer than this (or than `max_message_bytes` when smaller)
/// are passed on as they arrive when nothing in them must be read whole.
const STREAM_FROM: usize = 1 << 20;
/// Most bytes read from the upstream at once while streaming a message.
const STREAM_CHUNK: usize = 64 * 1024;
/// Portal Warden executes upstream in place of a refused statement: it
/// never exists, so the server answers with an error (and aborts the
/// transaction as the statement's own error would have).
const ABORT_PORTAL: &str = "warden: statement refused";
/// How long the upstream half may take to deliver a FATAL error queued by
/// the client half before the session closes.
const FATAL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes moved, for the connection's close event.
#[derive(Default)]
pub struct Counters {
    pub up: AtomicU64,
    pub down: AtomicU64,
}

/// How the session ended.
#[derive(Debug)]
pub enum End {
    /// The client said Terminate or closed its side.
    ClientClosed,
    /// The upstream closed the connection.
    UpstreamClosed,
    /// A protocol or I/O error; the client was told when possible.
    Error(String),
}

/// Why the upstream half ends a session. The client is told with a FATAL
/// ErrorResponse carrying [`Fatal::sqlstate`] and this text, and the
/// statement being answered gets its result event with the same reason.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    /// The server reports a setting that changes how SQL is tokenised
    /// (`client_encoding`, `standard_conforming_strings`): statements after
    /// it could be read differently by Warden and by the server.
    #[error("{0}; Warden closes the session")]
    UnsafeSetting(String),
    /// Binary COPY rows cannot be masked value by value.
    #[error(
        "binary COPY out cannot be masked and the grant has masking; Warden closes the session"
    )]
    BinaryCopyOut,
    /// A message that must be read whole (to be masked or summarised) is
    /// larger than the target's `max_message_bytes`.
    #[error(
        "the upstream sent a {what} of {len} bytes, which Warden must read whole{why} and which \
         exceeds the target's max_message_bytes ({max}); Warden closes the session"
    )]
    TooLarge {
        what: &'static str,
        why: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the upstream sent a malformed message: {0}")]
    Malformed(CodecError),
    /// A COPY TO row of masked columns that does not split as its format
    /// says: it cannot be masked field by field.
    #[error("a COPY row of masked columns was not understood ({0}); Warden closes the session")]
    MaskedCopyRow(String),
    #[error("a masked message could not be encoded: {0}")]
    Encode(#[from] CodecError),
}

impl Fatal {
    fn sqlstate(&self) -> &'static str {
        match self {
            // Changing these settings is refused by policy (SET of them is
            // refused with 42501 too).
            Fatal::UnsafeSetting(_) => "42501",
            Fatal::BinaryCopyOut => "0A000",
            Fatal::TooLarge { .. } => "54000",
            Fatal::Malformed(_) | Fatal::Encode(_) | Fatal::MaskedCopyRow(_) => "08P01",
        }
    }
}

/// One column of a result, resolved for masking.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// Column rule from the grant's masking, through the catalog map.
    strategy: Option<Strategy>,
    /// Text format, or a binary value whose bytes are text (text, varchar,
    /// name, json…): the pattern backstop can read and rewrite it.
    textual: bool,
    /// A column rule's marker can stand for the value: text format, or a
    /// binary type whose value is text of any length (not `"char"`, one
    /// byte). Otherwise a masked value is sent as NULL.
    marker_fits: bool,
}

type Columns = Arc<Vec<Column>>;

/// What the upstream owes the client next, queued by the client half.
enum Expect {
    /// The ParseComplete of the statement Warden numbered `id`.
    ParseComplete {
        id: u64,
    },
    BindComplete,
    CloseComplete,
    /// A Describe; `portal` names the portal described (for its columns);
    /// `statement`: the id of a described statement whose parameter types
    /// Warden keeps (see [`ParamTypes`]); `swallow`: Warden sent it (to
    /// learn the columns), the client did not.
    Describe {
        portal: Option<String>,
        statement: Option<u64>,
        swallow: bool,
    },
    /// An Execute of an audited statement.
    Execute {
        stmt: Arc<Running>,
        portal: String,
    },
    /// A simple Query, answered up to and including ReadyForQuery.
    Query {
        stmt: Arc<Running>,
        /// [`Upstream::runs`] once it was forwarded (see [`Settled`]).
        runs: u64,
    },
    /// A FunctionCall, answered up to and including ReadyForQuery.
    FunctionCall {
        stmt: Arc<Running>,
        runs: u64,
    },
    /// ReadyForQuery for a Sync.
    Sync {
        runs: u64,
    },
    /// Warden's own query (catalog lookups): rows go to `reply`, nothing to
    /// the client.
    Internal {
        reply: oneshot::Sender<Result<Vec<Vec<Option<String>>>, String>>,
    },
    /// Warden's Execute of [`ABORT_PORTAL`] in place of a refused statement:
    /// its ErrorResponse is not the client's; with `sync`, Warden sent a
    /// Sync too and its ReadyForQuery (the new transaction status) is not
    /// the client's either.
    Abort {
        sync: bool,
    },
    /// A refusal: send `error` to the client when its turn comes, followed
    /// by ReadyForQuery when `ready` (simple query; in a batch the Sync's
    /// ReadyForQuery follows).
    Refusal {
        error: Bytes,
        ready: bool,
    },
    /// Everything before it has been answered: `reply` gets whether the
    /// server is skipping to the next Sync after an error (it would skip
    /// what follows too). An error that drops it answers `true`.
    Barrier {
        reply: oneshot::Sender<bool>,
    },
}

impl Expect {
    /// Answered without waiting for the upstream.
    fn is_local(&self) -> bool {
        matches!(self, Expect::Refusal { .. } | Expect::Barrier { .. })
    }

    /// Answered by one ReadyForQuery of the server (see [`Ends`]).
    fn awaits_ready(&self) -> bool {
        matches!(
            self,
            Expect::Sync { .. }
                | Expect::Query { .. }
                | Expect::FunctionCall { .. }
                | Expect::Internal { .. }
                | Expect::Abort { sync: true }
        )
    }
}

/// Where transactions ended, counted in the server's ReadyForQuery
/// messages: the upstream half numbers each message it sends that the
/// server answers with one ([`Expect::awaits_ready`]), the downstream half
/// counts them as it passes them. `idle` is the number of the last one
/// reporting no transaction (every portal, and every cursor not declared
/// WITH HOLD, is gone by then), `failed` of the last one reporting a failed
/// transaction or following an error (its rollback may take a holdable
/// cursor declared in it; an implicit transaction that fails reports idle).
/// A portal or cursor Warden recorded when `n` such messages had been sent
/// is gone once either passes `n`: a name its code did not see opened
/// since (a refcursor a trusted function opens under it) is not its.
#[derive(Default)]
struct Ends {
    idle: AtomicU64,
    failed: AtomicU64,
}

/// A SQL cursor Warden saw declared (and decided) through this session.
#[derive(Clone, Copy)]
struct Cursor {
    hold: bool,
    /// [`Upstream::readies`] when it was declared.
    born: u64,
    /// Its place among the DECLAREs and SAVEPOINTs Warden forwarded
    /// ([`Upstream::marks`]).
    mark: u64,
}

/// How many statement runs (Query, Execute, FunctionCall messages
/// forwarded) the server has answered with a ReadyForQuery that the
/// downstream half has passed: every ParameterStatus they caused has been
/// checked by then, because the server sends it just before that
/// ReadyForQuery. Until then a setting they changed is unknown to Warden,
/// while the server already lexes the next texts with it.
type Settled = Arc<std::sync::atomic::AtomicU64>;

/// Whether `command` ends the transaction (or rolls back to a savepoint),
/// and whether it may roll back (then cursors WITH HOLD declared in it go
/// too): `Some(rolls_back)`.
fn transaction_end(command: &str) -> Option<bool> {
    match command {
        "COMMIT" | "PREPARE TRANSACTION" => Some(false),
        "ROLLBACK" | "ROLLBACK TO SAVEPOINT" => Some(true),
        _ => None,
    }
}

/// A FETCH or MOVE of a cursor Warden did not see declared in this
/// transaction (a portal opened by code Warden trusts, or a name reused
/// since): what it runs was never decided.
fn undeclared_cursor(d: &Arc<Decided>, name: &str) -> Arc<Decided> {
    Arc::new(Decided {
        decision: StatementDecision::Denied,
        answer: Answer::Policy,
        rule: Some("cursors".to_owned()),
        reason: Some(format!(
            "cursor {name:?} was not declared through Warden in this transaction: what it \
             reads was never decided"
        )),
        columns: None,
        ..(**d).clone()
    })
}

/// What became of a statement after the approval step.
enum Held {
    /// Go on with this decision (approved statements are allowed).
    Go(Arc<Decided>),
    /// Refuse it with this SQLSTATE.
    Refuse(Arc<Decided>, &'static str),
}

/// A statement the client parsed (extended protocol), as Warden decided it.
struct Prepared {
    /// Distinguishes successive statements of one name (for [`ParamTypes`]).
    id: u64,
    decided: Arc<Decided>,
    /// For a statement of an `approve` rule: its approval fingerprint
    /// (see [`statement_fingerprint`]) and whether a grant must also match
    /// the exact parameter values (every class but read and write).
    approval: Option<(String, bool)>,
}

/// A bound portal and what its Execute needs.
#[derive(Clone)]
struct Portal {
    decided: Arc<Decided>,
    /// Asked of the approvers at the portal's first Execute; `None` once
    /// approved (a later Execute continues the same execution: same
    /// statement, same values) or when no approval is needed.
    ask: Option<Ask>,
}

/// An approval request for one execution.
#[derive(Clone)]
struct Ask {
    /// The statement and its bound values, masked, as the approver sees it.
    statement: String,
    fingerprint: String,
}

/// Parameter types of statements that need approval, by statement id: the
/// types the client declared at Parse, replaced by the server's
/// ParameterDescription when the client describes the statement. Written
/// by both halves; an entry exists only while the statement does.
type ParamTypes = Arc<std::sync::Mutex<HashMap<u64, Vec<u32>>>>;

/// Ids of parsed statements the server refused (an ErrorResponse where
/// their ParseComplete was due): the server does not have them, so neither
/// do Warden's books. Filled by the upstream → client half, emptied by the
/// other before it next reads a statement name.
type RefusedParses = Arc<std::sync::Mutex<Vec<u64>>>;

fn lock_types(t: &ParamTypes) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<u32>>> {
    // A panic while holding the lock leaves a map of plain values: still
    // consistent.
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A forwarded statement whose results are being summarised.
pub(super) struct Running {
    pub seq: u64,
    pub decided: Arc<Decided>,
    pub via: &'static str,
    pub started: Instant,
}

/// Entry point: runs both halves until either side ends.
pub async fn run<C, U>(
    info: Arc<SessionInfo>,
    client: C,
    client_rest: BytesMut,
    upstream: U,
    upstream_rest: BytesMut,
    status: u8,
    counters: Arc<Counters>,
) -> End
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    U: AsyncRead + AsyncWrite + Send + 'static,
{
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    let (tx, rx) = mpsc::unbounded_channel();
    let param_types = ParamTypes::default();
    let refused_parses = RefusedParses::default();
    let settled = Settled::default();
    let ends = Arc::new(Ends::default());
    let down = Downstream {
        settled: Arc::clone(&settled),
        readies: 0,
        ends: Arc::clone(&ends),
        param_types: Arc::clone(&param_types),
        refused_parses: Arc::clone(&refused_parses),
        info: Arc::clone(&info),
        upstream: ur,
        buf: upstream_rest,
        client: cw,
        out: BytesMut::with_capacity(16 * 1024),
        expect: rx,
        queue: VecDeque::new(),
        status,
        failed: false,
        portal_columns: HashMap::new(),
        current: None,
        counters: Arc::clone(&counters),
    };
    let up = Upstream {
        decider: Decider::new(Arc::clone(&info)),
        info,
        client: cr,
        buf: client_rest,
        upstream: uw,
        out: BytesMut::with_capacity(16 * 1024),
        expect: tx,
        statements: HashMap::new(),
        portals: HashMap::new(),
        param_types,
        refused_parses,
        next_statement: 0,
        described: None,
        skipping: false,
        seq: 0,
        counters,
        functions: HashMap::new(),
        budget: Default::default(),
        batch_open: false,
        runs: 0,
        settled,
        readies: AtomicU64::new(0),
        ends,
        portal_born: HashMap::new(),
        cursors: HashMap::new(),
        marks: 0,
        first_savepoint: None,
    };
    let up = up.run();
    let down = down.run();
    tokio::pin!(up, down);
    tokio::select! {
        (end, mut reader) = &mut up => {
            if matches!(end, End::Error(_)) {
                // The client half queued a FATAL error for the client; the
                // upstream half sends it (after any answer still owed) and
                // ends the stream. What the client is still sending (the
                // rest of a message over the limit) is read and dropped
                // meanwhile: closing on unread bytes would reset the
                // connection and lose the error on its way.
                let sent = async {
                    let _ = tokio::time::timeout(FATAL_GRACE, down).await;
                };
                tokio::join!(sent, linger(&mut reader, LINGER_TIME, LINGER_BYTES));
            }
            end
        }
        end = &mut down => end,
    }
}

/// How long, and how many bytes of a client's input, Warden reads and
/// drops after ending a session with an error (see [`linger`]); it stops
/// sooner once the client has sent nothing for [`LINGER_IDLE`].
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 64 << 20;

/// Reads and drops the client's input until it ends, pauses for
/// [`LINGER_IDLE`], `time` has passed or `max` bytes were read (a
/// lingering close, as HTTP servers do after an error answer).
async fn linger<R: AsyncRead + Unpin>(reader: &mut R, time: std::time::Duration, max: usize) {
    let until = tokio::time::Instant::now() + time;
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0usize;
    while read < max {
        let wait = until
            .saturating_duration_since(tokio::time::Instant::now())
            .min(LINGER_IDLE);
        match tokio::time::timeout(wait, reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => return,
        }
    }
}

/// The client's read half while a statement is held: what it sends waits
/// in the session's buffer.
struct HeldReader<'a, R> {
    io: &'a mut R,
    buf: &'a mut BytesMut,
}

impl<R: AsyncRead + Unpin> super::super::session::HeldClient for HeldReader<'_, R> {
    fn buffered(&self) -> usize {
        self.buf.len()
    }

    async fn read_more(&mut self) -> bool {
        matches!(self.io.read_buf(self.buf).await, Ok(n) if n > 0)
    }
}

/// Client → upstream.
struct Upstream<R, W> {
    info: Arc<SessionInfo>,
    decider: Decider,
    client: R,
    buf: BytesMut,
    upstream: W,
    out: BytesMut,
    expect: mpsc::UnboundedSender<Expect>,
    /// Parsed statements by name ("" = unnamed) and their decisions.
    statements: HashMap<String, Arc<Prepared>>,
    /// Bound portals by name and the statement each runs.
    portals: HashMap<String, Option<Portal>>,
    param_types: ParamTypes,
    refused_parses: RefusedParses,
    /// Ids given to parsed statements so far.
    next_statement: u64,
    /// The portal the client described since it was bound.
    described: Option<String>,
    /// An error in an extended-protocol batch: discard until Sync.
    skipping: bool,
    /// Statements audited in this session.
    seq: u64,
    counters: Arc<Counters>,
    /// FunctionCall oids resolved to (schema, name), kept apart: either
    /// may contain a dot.
    functions: HashMap<u32, (String, String)>,
    /// This session's share of the agent-wide buffer budget.
    budget: crate::proxy::budget::Charge,
    /// Extended-protocol messages were forwarded since the last Sync.
    batch_open: bool,
    /// Statement runs forwarded (Query, Execute, FunctionCall).
    runs: u64,
    /// Runs whose ReadyForQuery the downstream half has passed: while it
    /// is below `runs`, a setting changed by a run in flight (the server
    /// reports it only at that ReadyForQuery, at the end of a batch) may
    /// make the server lex the next text otherwise than Warden (see
    /// [`super::decide::tokenisation_neutral`]).
    settled: Settled,
    /// Messages sent upstream that a ReadyForQuery answers (see [`Ends`]).
    readies: AtomicU64,
    ends: Arc<Ends>,
    /// When each portal in `portals` was bound (a [`Upstream::readies`]).
    portal_born: HashMap<String, u64>,
    /// SQL cursors declared through this session.
    cursors: HashMap<String, Cursor>,
    /// DECLAREs and SAVEPOINTs forwarded, in order.
    marks: u64,
    /// The mark of the first SAVEPOINT of the open transaction: a ROLLBACK
    /// TO SAVEPOINT takes the cursors declared after the savepoint it
    /// names, so at most those after the first.
    first_savepoint: Option<u64>,
}

impl<R, W> super::catalog::CatalogSource for Upstream<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async fn rows(&mut self, sql: &str) -> Result<super::catalog::Rows, String> {
        self.internal_query(sql).await
    }
}

impl<R, W> Upstream<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Runs until the client or the session ends; gives the client's read
    /// half back (for [`linger`]).
    async fn run(mut self) -> (End, R) {
        let end = self.pump().await;
        let _ = self.flush().await;
        let _ = self.upstream.shutdown().await;
        (end, self.client)
    }

    async fn pump(&mut self) -> End {
        loop {
            loop {
                // An unknown type is refused from its first byte, as the
                // server does, rather than after waiting for a body.
                if let Some(&tag) = self.buf.first()
                    && frontend::name_of(tag).is_none()
                {
                    let e = format!("unknown message type 0x{tag:02x}");
                    self.fatal("08P01", &format!("protocol violation: {e}"));
                    return End::Error(format!("client protocol error: {e}"));
                }
                let frame = match decode_frame(&mut self.buf, self.info.max_message) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(CodecError::TooLong { tag, len, max }) => {
                        let what = tag.and_then(frontend::name_of).unwrap_or("message");
                        let e = format!(
                            "a {what} message of {len} bytes exceeds the target's \
                             max_message_bytes ({max})"
                        );
                        self.fatal("54000", &e);
                        return End::Error(format!("client message too large: {e}"));
                    }
                    Err(e) => {
                        self.fatal("08P01", &format!("protocol violation: {e}"));
                        return End::Error(format!("client protocol error: {e}"));
                    }
                };
                self.counters
                    .up
                    .fetch_add(frame.raw.len() as u64, Ordering::Relaxed);
                match self.message(frame).await {
                    Ok(true) => {}
                    Ok(false) => return End::ClientClosed,
                    Err(e) => return End::Error(e),
                }
                if self.out.len() >= FLUSH_BYTES
                    && let Err(e) = self.flush().await
                {
                    return End::Error(format!("writing to upstream: {e}"));
                }
            }
            if let Err(e) = self.flush().await {
                return End::Error(format!("writing to upstream: {e}"));
            }
            let need =
                crate::proxy::budget::need(&self.buf, self.buf.capacity(), self.info.max_message);
            if let Err(e) = self.budget.cover(need) {
                self.fatal("53200", &e.to_string());
                return End::Error(format!("frame budget: {e}"));
            }
            match self.client.read_buf(&mut self.buf).await {
                Ok(0) => return End::ClientClosed,
                Ok(_) => {}
                Err(e) => return End::Error(format!("reading from client: {e}")),
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.upstream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    fn forward(&mut self, frame: &Frame) {
        self.out.extend_from_slice(&frame.raw);
    }

    fn queue(&self, e: Expect) {
        if e.awaits_ready() {
            self.readies.fetch_add(1, Ordering::Relaxed);
        }
        // The receiver lives as long as the session: a send error means the
        // other half ended and the session is closing anyway.
        let _ = self.expect.send(e);
    }

    /// A fatal protocol error: tell the client (through the other half, in
    /// order) and end.
    fn fatal(&self, code: &str, message: &str) {
        self.queue(Expect::Refusal {
            error: super::error_bytes("FATAL", code, &format!("Warden: {message}"), None, None),
            ready: false,
        });
    }

    /// Handles one client message; `Ok(false)` ends the session.
    async fn message(&mut self, frame: Frame) -> Result<bool, String> {
        self.reap_refused_parses();
        let msg = match FrontendMessage::parse(&frame) {
            Ok(m) => m,
            Err(e) => {
                self.fatal("08P01", &format!("malformed message: {e}"));
                return Err(format!("client sent a malformed message: {e}"));
            }
        };
        // Extended-protocol messages since the last Sync: Warden's own
        // queries would run inside the client's batch.
        let batch = match &msg {
            FrontendMessage::Sync => Some(false),
            FrontendMessage::Parse { .. }
            | FrontendMessage::Bind { .. }
            | FrontendMessage::Describe { .. }
            | FrontendMessage::Execute { .. }
            | FrontendMessage::Close { .. }
            | FrontendMessage::Flush => Some(true),
            _ => None,
        };
        let go_on = self.message_of(&frame, msg).await;
        if let Some(open) = batch {
            self.batch_open = open;
        }
        go_on
    }

    async fn message_of(
        &mut self,
        frame: &Frame,
        msg: FrontendMessage<'_>,
    ) -> Result<bool, String> {
        match msg {
            FrontendMessage::Query { sql } => {
                if self.skipping {
                    // The server skips it too, up to the Sync.
                    return Ok(true);
                }
                if self.batch_open {
                    self.refuse_in_batch("a simple Query", sql.to_owned())
                        .await?;
                    return Ok(true);
                }
                let sql = sql.to_owned();
                self.query(frame, &sql).await?;
            }
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => {
                if self.skipping {
                    return Ok(true);
                }
                let (name, query) = (name.to_owned(), query.to_owned());
                if !name.is_empty()
                    && (self.statements.contains_key(&name) || self.decider.knows_prepared(&name))
                {
                    // The server would refuse it (42P05) and keep the old
                    // statement: Warden's books must not take the new one.
                    self.seq += 1;
                    let d = self.decider.duplicate_prepared(&name, &query);
                    self.refuse(&d, "extended", false).await?;
                    self.skipping = true;
                    return Ok(true);
                }
                let d = self.decide(&query).await;
                // A statement of an `approve` rule is parsed (which runs
                // nothing) and asked about at each execution, with the
                // values bound to it.
                let ask = d.decision == StatementDecision::ApprovalRequired
                    && self.info.approvals.is_some();
                // An EXECUTE is shown, and granted, with the statement it runs.
                let executed = self.decider.executed_texts(&d).filter(|_| ask);
                let d = match &executed {
                    Some(prepared) => Arc::new(Decided {
                        statement: format!("{}\n{prepared}", d.statement),
                        ..(*d).clone()
                    }),
                    None => d,
                };
                if d.allowed() || ask {
                    self.forget_statements_named_by(&d);
                    self.next_statement += 1;
                    let id = self.next_statement;
                    let approval = ask.then(|| {
                        let exact = !matches!(d.class.as_str(), "read" | "write");
                        let text = match &executed {
                            Some(prepared) => format!("{query}\n{prepared}"),
                            None => query.clone(),
                        };
                        (statement_fingerprint(&d.class, &text), exact)
                    });
                    let mut types = lock_types(&self.param_types);
                    if ask {
                        types.insert(id, param_types.clone());
                    }
                    let old = self.statements.insert(
                        name,
                        Arc::new(Prepared {
                            id,
                            decided: d,
                            approval,
                        }),
                    );
                    if let Some(old) = old {
                        types.remove(&old.id);
                    }
                    drop(types);
                    self.forward(frame);
                    self.queue(Expect::ParseComplete { id });
                } else {
                    self.seq += 1;
                    self.refuse(&d, "extended", false).await?;
                    self.skipping = true;
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                ..
            } => {
                if self.skipping {
                    return Ok(true);
                }
                let bound = self
                    .statements
                    .get(statement)
                    .map(|p| self.bound(p, &param_formats, &params));
                self.portals.insert(portal.to_owned(), bound);
                self.portal_born
                    .insert(portal.to_owned(), self.readies.load(Ordering::Relaxed));
                if self.described.as_deref() == Some(portal) {
                    self.described = None;
                }
                self.forward(frame);
                self.queue(Expect::BindComplete);
            }
            FrontendMessage::Describe { kind, name } => {
                if self.skipping {
                    return Ok(true);
                }
                let (portal, statement) = match kind {
                    DescribeTarget::Portal => {
                        self.described = Some(name.to_owned());
                        (Some(name.to_owned()), None)
                    }
                    DescribeTarget::Statement => (
                        None,
                        self.statements
                            .get(name)
                            .filter(|p| p.approval.is_some())
                            .map(|p| p.id),
                    ),
                };
                self.forward(frame);
                self.queue(Expect::Describe {
                    portal,
                    statement,
                    swallow: false,
                });
            }
            FrontendMessage::Execute { portal, .. } => {
                if self.skipping {
                    return Ok(true);
                }
                let portal = portal.to_owned();
                let Some(Some(bound)) = self.live_portal(&portal).cloned() else {
                    // A portal bound to a statement Warden never saw parsed
                    // (or none at all): nothing to decide on, so refuse.
                    self.seq += 1;
                    let d = self.decider.unknown_portal(&portal);
                    self.refuse(&d, "extended", false).await?;
                    self.skipping = true;
                    return Ok(true);
                };
                let d = match bound.ask {
                    None => bound.decided,
                    Some(_) if self.batch_failed().await? => {
                        // The server is skipping to Sync after an error
                        // earlier in the batch (a failed Bind…): it would
                        // not run this Execute, so there is nothing to ask.
                        self.skipping = true;
                        return Ok(true);
                    }
                    Some(ask) => {
                        let held = (bound.decided.decision == StatementDecision::ApprovalRequired)
                            .then_some((ask.statement, ask.fingerprint));
                        match self.approval(bound.decided, held).await? {
                            Held::Go(d) => {
                                let approved = Portal {
                                    decided: Arc::clone(&d),
                                    ask: None,
                                };
                                self.portals.insert(portal.clone(), Some(approved));
                                d
                            }
                            Held::Refuse(d, code) => {
                                self.seq += 1;
                                self.refuse_with(&d, "extended", false, code).await?;
                                self.skipping = true;
                                return Ok(true);
                            }
                        }
                    }
                };
                // A FETCH parsed before the portal it names was bound:
                // judged on the portals as they are now.
                let d = self.through_portals(d);
                if !d.allowed() {
                    self.seq += 1;
                    self.refuse(&d, "extended", false).await?;
                    self.skipping = true;
                    return Ok(true);
                }
                self.seq += 1;
                let stmt = self.audit_request(&d, "extended").await?;
                let Some(stmt) = stmt else {
                    self.skipping = true;
                    return Ok(true);
                };
                if d.may_change_catalog() {
                    self.info.catalog.mark_stale();
                }
                if self.info.masker.is_some() && self.described.as_deref() != Some(&portal) {
                    // Learn the portal's columns so its rows can be masked
                    // by column even when the client did not ask.
                    frontend::describe(&mut self.out, DescribeTarget::Portal, &portal)
                        .map_err(|e| e.to_string())?;
                    self.queue(Expect::Describe {
                        portal: Some(portal.clone()),
                        statement: None,
                        swallow: true,
                    });
                    self.described = Some(portal.clone());
                }
                let born = self.readies.load(Ordering::Relaxed);
                self.note_cursors(&d, born);
                self.forward(frame);
                self.runs += 1;
                self.queue(Expect::Execute { stmt, portal });
            }
            FrontendMessage::Close { kind, name } => {
                if self.skipping {
                    return Ok(true);
                }
                match kind {
                    DescribeTarget::Statement => {
                        if let Some(p) = self.statements.remove(name) {
                            lock_types(&self.param_types).remove(&p.id);
                        }
                        self.decider.forget_prepared(name);
                    }
                    DescribeTarget::Portal => {
                        self.portals.remove(name);
                        self.portal_born.remove(name);
                    }
                }
                self.forward(frame);
                self.queue(Expect::CloseComplete);
            }
            FrontendMessage::Sync => {
                self.skipping = false;
                // The unnamed portal does not survive the transaction's end
                // in every case; forget what was described.
                self.described = None;
                self.forward(frame);
                self.queue(Expect::Sync { runs: self.runs });
            }
            FrontendMessage::Flush => {
                if !self.skipping {
                    self.forward(frame);
                }
            }
            FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail { .. } => {
                // Only meaningful after the server's CopyInResponse to a
                // statement already decided and audited (COPY … FROM STDIN);
                // elsewhere the server ignores them.
                self.forward(frame);
            }
            FrontendMessage::FunctionCall { oid, .. } => {
                if self.skipping {
                    // The server skips it too, up to the Sync.
                    return Ok(true);
                }
                if self.batch_open {
                    self.refuse_in_batch("FunctionCall", format!("FunctionCall oid {oid}"))
                        .await?;
                    return Ok(true);
                }
                self.function_call(frame, oid).await?;
            }
            FrontendMessage::Terminate => {
                self.forward(frame);
                return Ok(false);
            }
            FrontendMessage::Password(_) => {
                self.fatal("08P01", "unexpected password message after startup");
                return Err("client sent a password message after startup".into());
            }
        }
        Ok(true)
    }

    /// The decision for `sql`, on a current catalog snapshot: a snapshot
    /// marked stale is refreshed first, and a statement naming a relation
    /// the snapshot does not know is decided again on a refreshed one
    /// (refused if that cannot be done). Warden's own queries are not
    /// sent inside an extended-protocol batch: there a stale snapshot
    /// waits for the next Sync (result origins it cannot place are
    /// withheld meanwhile) and an unknown relation is refused.
    async fn decide(&mut self, sql: &str) -> Arc<Decided> {
        let d = self.decide_text(sql).await;
        self.through_portals(d)
    }

    /// SQL `FETCH` and `MOVE` run protocol portals too (SQL cursors and
    /// portals are one namespace on the server; for `DELETE … RETURNING`
    /// the first FETCH runs the whole statement). Fetching a portal Warden
    /// knows from a Bind is deciding to run its statement: refused unless
    /// that statement is allowed as it stands (one of an `approve` rule is
    /// asked at its Execute, with its values), and reading masked columns
    /// when it does. A name Warden has no Bind for is a SQL cursor, decided
    /// at its DECLARE.
    fn through_portals(&self, d: Arc<Decided>) -> Arc<Decided> {
        if !(d.allowed() || d.decision == StatementDecision::ApprovalRequired) {
            return d;
        }
        let mut out = Arc::clone(&d);
        // Cursors declared (true) or closed (false) earlier in the same
        // text, and whether a transaction ended earlier in it (then what
        // Warden recorded before the text is gone).
        let mut declared: HashMap<&str, (bool, bool)> = HashMap::new();
        let mut ended = false;
        for s in d.analysis.iter().flat_map(|a| &a.statements) {
            if let Some(all) = transaction_end(&s.command) {
                ended = true;
                for (open, hold) in declared.values_mut() {
                    *open &= *hold && !all;
                }
                continue;
            }
            match (s.command.as_str(), &s.cursor) {
                ("DECLARE", Some(Some(name))) => {
                    declared.insert(name, (true, s.cursor_hold));
                    continue;
                }
                ("FETCH" | "MOVE", Some(Some(_))) => {}
                (_, Some(Some(name))) => {
                    declared.insert(name, (false, false));
                    continue;
                }
                (_, Some(None)) => {
                    for (open, _) in declared.values_mut() {
                        *open = false;
                    }
                    continue;
                }
                _ => continue,
            }
            let Some(Some(name)) = &s.cursor else {
                continue;
            };
            let known = declared.get(name.as_str()).map(|(open, _)| *open);
            let bound = match known {
                Some(true) => continue,
                Some(false) => None,
                None if ended => None,
                None => self.live_portal(name),
            };
            let bound = match bound {
                None if known.is_none() && !ended && self.live_cursor(name) => continue,
                None => return undeclared_cursor(&d, name),
                Some(Some(p)) if p.ask.is_none() && p.decided.allowed() => p,
                Some(p) => {
                    let rule = p.as_ref().and_then(|p| p.decided.rule.clone());
                    return self.decider.portal_run_by_sql(&d, name, rule);
                }
            };
            if bound.decided.reads_masked() {
                out = super::decide::reading_masked_through(&out, format!("portal {name}"));
            }
        }
        out
    }

    async fn decide_text(&mut self, sql: &str) -> Arc<Decided> {
        if self.runs > self.settled.load(Ordering::Acquire)
            && !super::decide::tokenisation_neutral(sql)
        {
            return self.decider.lexed_while_running(sql);
        }
        let mut refreshed = false;
        if self.info.catalog.take_stale() {
            if self.batch_open {
                self.info.catalog.mark_stale();
            } else {
                match self.refresh_catalog().await {
                    Ok(()) => refreshed = true,
                    Err(e) => {
                        // Kept stale: origins it cannot place stay withheld.
                        self.info.catalog.mark_stale();
                        warn!(error = %e, "catalog snapshot could not be refreshed");
                    }
                }
            }
        }
        let d = self.decider.decide(sql);
        if !d.allowed() || !d.names_unknown_relations() || refreshed {
            return d;
        }
        let why = if self.batch_open {
            "a relation not in Warden's catalog snapshot is named inside an extended-protocol \
             batch (send Sync first so that Warden can refresh it)"
                .to_owned()
        } else {
            match self.refresh_catalog().await {
                Ok(()) => return self.decider.decide(sql),
                Err(e) => {
                    warn!(error = %e, "catalog snapshot could not be refreshed");
                    "a relation not in Warden's catalog snapshot is named and the catalog could \
                     not be read again"
                        .to_owned()
                }
            }
        };
        let masking = self.info.catalog.get().columns.masking().to_owned();
        Arc::new(Decided {
            decision: StatementDecision::Denied,
            answer: Answer::Policy,
            rule: Some(format!("[masking.{masking}]")),
            reason: Some(why),
            columns: None,
            ..(*d).clone()
        })
    }

    /// Reads the catalog snapshot again on this session's connection (the
    /// same one if the server's digest is unchanged) and forgets decisions
    /// made with the old one.
    async fn refresh_catalog(&mut self) -> Result<(), String> {
        let Some(masker) = self.info.masker.clone() else {
            return Ok(());
        };
        let previous = self.info.catalog.get();
        let masking = previous.columns.masking().to_owned();
        let fresh = super::catalog::load(self, &masking, &masker, Some(&previous))
            .await
            .map_err(|e| e.to_string())?;
        if !Arc::ptr_eq(&fresh, &previous) {
            tracing::info!(masking = %masking, "catalog snapshot refreshed");
            self.info.catalog.set(fresh);
            self.decider.catalog_changed();
        }
        Ok(())
    }

    async fn query(&mut self, frame: &Frame, sql: &str) -> Result<(), String> {
        let d = self.decide(sql).await;
        // An EXECUTE is shown, and granted, with the statement it runs.
        // Only a held statement needs them (the shape costs a parse).
        let held = (d.decision == StatementDecision::ApprovalRequired).then(|| {
            match self.decider.executed_texts(&d) {
                Some(prepared) => (
                    format!("{}\n{prepared}", d.statement),
                    statement_fingerprint(&d.class, &format!("{sql}\n{prepared}")),
                ),
                None => (d.statement.clone(), statement_fingerprint(&d.class, sql)),
            }
        });
        let d = match self.approval(d, held).await? {
            Held::Go(d) => d,
            Held::Refuse(d, code) => {
                self.seq += 1;
                return self.refuse_with(&d, "simple", true, code).await;
            }
        };
        if d.is_empty() {
            // An empty query string: the server answers EmptyQueryResponse.
            self.forward(frame);
            self.queue(Expect::Sync { runs: self.runs });
            return Ok(());
        }
        self.seq += 1;
        if let Some(stmt) = self.audit_request(&d, "simple").await? {
            if d.may_change_catalog() {
                self.info.catalog.mark_stale();
            }
            self.decider.after_allowed(&d);
            self.forget_statements_named_by(&d);
            let born = self.readies.load(Ordering::Relaxed);
            self.note_cursors(&d, born);
            self.forward(frame);
            self.runs += 1;
            self.queue(Expect::Query {
                stmt,
                runs: self.runs,
            });
        }
        Ok(())
    }

    /// Whether the server is skipping to the next Sync after an error
    /// earlier in this batch: what was forwarded is sent with a Flush (so
    /// that the server answers it now) and Warden waits for the answers.
    async fn batch_failed(&mut self) -> Result<bool, String> {
        let (reply, answer) = oneshot::channel();
        frontend::flush(&mut self.out);
        self.queue(Expect::Barrier { reply });
        self.flush()
            .await
            .map_err(|e| format!("writing to upstream: {e}"))?;
        answer.await.map_err(|_| "session closed".to_owned())
    }

    /// What a Bind of `p` with these values gives its portal: for a
    /// statement of an `approve` rule, the request its Execute will ask,
    /// showing the values (masked) and, for every class but read and write,
    /// with a fingerprint that covers them exactly.
    fn bound(&self, p: &Prepared, formats: &[i16], params: &[Option<&[u8]>]) -> Portal {
        let ask = p.approval.as_ref().map(|(fingerprint, exact)| {
            let types = lock_types(&self.param_types)
                .get(&p.id)
                .cloned()
                .unwrap_or_default();
            let shown = super::params::show(params, formats, &types, &self.info.text_masker);
            if params.is_empty() {
                return Ask {
                    statement: p.decided.statement.clone(),
                    fingerprint: fingerprint.clone(),
                };
            }
            Ask {
                statement: format!("{}\n-- parameters: {}", p.decided.statement, shown.text),
                fingerprint: if *exact {
                    crate::approval::fingerprint::exact_fingerprint(
                        "postgres",
                        &format!("{fingerprint}\0parameters\0{}", shown.digest),
                    )
                } else {
                    fingerprint.clone()
                },
            }
        });
        Portal {
            decided: Arc::clone(&p.decided),
            ask,
        }
    }

    /// Audits the request phase of an allowed statement (committed before
    /// the caller forwards it). A refused one is audited and refused here;
    /// `None` then.
    async fn audit_request(
        &mut self,
        d: &Arc<Decided>,
        via: &'static str,
    ) -> Result<Option<Arc<Running>>, String> {
        if !d.allowed() {
            self.refuse(d, via, via == "simple").await?;
            return Ok(None);
        }
        let ev = self
            .info
            .statement_event(self.seq, d, via, StatementPhase::Request);
        if let Err(e) = self.info.audit.record(ev).await {
            tracing::error!(error = %e, "audit store unavailable; refusing statement");
            let error = super::error_bytes(
                "ERROR",
                "42501",
                "Warden: statement refused: the audit trail cannot be written",
                Some(&e.to_string()),
                None,
            );
            let ready = via == "simple" || via == "function_call";
            self.abort_upstream(ready)?;
            self.queue(Expect::Refusal { error, ready });
            return Ok(None);
        }
        Ok(Some(Arc::new(Running {
            seq: self.seq,
            decided: Arc::clone(d),
            via,
            started: Instant::now(),
        })))
    }

    /// Records a refusal and queues the client's error. `ready`: follow it
    /// with ReadyForQuery (simple query and function call).
    /// Forgets the statements whose Parse the server refused.
    fn reap_refused_parses(&mut self) {
        let refused: Vec<u64> = std::mem::take(
            &mut *self
                .refused_parses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if refused.is_empty() {
            return;
        }
        let mut types = lock_types(&self.param_types);
        self.statements.retain(|_, p| !refused.contains(&p.id));
        for id in refused {
            types.remove(&id);
        }
    }

    /// SQL `PREPARE name`, `DEALLOCATE name|ALL` and `DISCARD ALL` act on
    /// the same namespace as protocol Parse and Close: the statements
    /// Warden knows by those names are forgotten when such a statement is
    /// sent (a later Bind of the name is then refused at Execute — fail
    /// closed — rather than decided on what Warden saw parsed before).
    /// Likewise SQL `DECLARE name`, `CLOSE name|ALL` and `DISCARD ALL` act
    /// on the protocol's portals: a later Execute of such a name (a SQL
    /// cursor now, or nothing) is refused rather than decided on an
    /// earlier Bind.
    /// The portal of that name Warden recorded a Bind for, if the server
    /// still has it (no transaction ended since: see [`Ends`]).
    fn live_portal(&self, name: &str) -> Option<&Option<Portal>> {
        let born = self.portal_born.get(name)?;
        (self.ends.idle.load(Ordering::Acquire) <= *born)
            .then(|| self.portals.get(name))
            .flatten()
    }

    /// Whether Warden saw the SQL cursor `name` declared and the server
    /// still has it: a cursor is gone at the end of its transaction, one
    /// WITH HOLD when a transaction may have rolled back since.
    fn live_cursor(&self, name: &str) -> bool {
        self.cursors.get(name).is_some_and(|c| {
            let gone_at = if c.hold {
                &self.ends.failed
            } else {
                &self.ends.idle
            };
            gone_at.load(Ordering::Acquire) <= c.born
        })
    }

    /// Records the cursors an allowed statement declares or closes, and
    /// forgets every portal and cursor a transaction end in it takes,
    /// as it is forwarded (`born`: [`Upstream::readies`] before it).
    fn note_cursors(&mut self, d: &Decided, born: u64) {
        let Some(a) = &d.analysis else { return };
        for s in &a.statements {
            if let Some(all) = transaction_end(&s.command) {
                self.portals.clear();
                self.portal_born.clear();
                self.described = None;
                if s.command == "ROLLBACK TO SAVEPOINT" {
                    let first = self.first_savepoint;
                    self.cursors
                        .retain(|_, c| first.is_some_and(|f| c.mark < f));
                } else {
                    self.cursors.retain(|_, c| c.hold && !all);
                    self.first_savepoint = None;
                }
                continue;
            }
            if s.command == "SAVEPOINT" {
                self.first_savepoint.get_or_insert(self.marks);
                self.marks += 1;
                continue;
            }
            match (s.command.as_str(), &s.cursor) {
                ("DECLARE", Some(Some(name))) => {
                    let hold = s.cursor_hold;
                    let mark = self.marks;
                    self.marks += 1;
                    self.cursors
                        .insert(name.clone(), Cursor { hold, born, mark });
                }
                ("FETCH" | "MOVE", _) | (_, None) => {}
                (_, Some(Some(name))) => {
                    self.cursors.remove(name);
                }
                (_, Some(None)) => self.cursors.clear(),
            }
        }
    }

    /// A FunctionCall or simple Query inside an unfinished extended-protocol
    /// batch: refused as an error of the batch (the rest is discarded up to
    /// the Sync). Warden cannot look a function up there (a server skipping
    /// to Sync ignores its query), and each is answered with a
    /// ReadyForQuery of its own, which ends the batch's implicit
    /// transaction behind Warden's books.
    async fn refuse_in_batch(&mut self, what: &str, statement: String) -> Result<(), String> {
        self.seq += 1;
        let d = self.decider.unknown_portal("");
        let d = Decided {
            statement,
            reason: Some(format!(
                "{what} inside an unfinished extended-protocol batch (send Sync first)"
            )),
            rule: Some("protocol".to_owned()),
            ..(*d).clone()
        };
        self.refuse(&d, "extended", false).await?;
        self.skipping = true;
        Ok(())
    }

    fn forget_statements_named_by(&mut self, d: &Decided) {
        let Some(a) = &d.analysis else { return };
        for s in &a.statements {
            match (s.command.as_str(), &s.cursor) {
                ("FETCH" | "MOVE", _) | (_, None) => {}
                (_, Some(Some(name))) => {
                    self.portals.remove(name);
                    if self.described.as_deref() == Some(name) {
                        self.described = None;
                    }
                }
                (_, Some(None)) => {
                    self.portals.clear();
                    self.described = None;
                }
            }
        }
        let mut types = lock_types(&self.param_types);
        for s in &a.statements {
            match (&s.prepare, &s.deallocate) {
                (Some((name, _)), _) | (_, Some(Some(name))) => {
                    if let Some(p) = self.statements.remove(name) {
                        types.remove(&p.id);
                    }
                }
                (_, Some(None)) => {
                    for (_, p) in self.statements.drain() {
                        types.remove(&p.id);
                    }
                }
                _ => {}
            }
        }
    }

    async fn refuse(&mut self, d: &Decided, via: &'static str, ready: bool) -> Result<(), String> {
        self.refuse_with(d, via, ready, d.answer.sqlstate()).await
    }

    /// A statement of an `approve` rule: asks the approval service and
    /// waits (nothing is forwarded; the client gets a NoticeResponse with
    /// the request id) until it is approved, denied, withdrawn (cancel, or
    /// the client closing) or timed out. Other decisions pass unchanged.
    /// `shown` is what the approver sees (and what the audit trail records
    /// for this execution): the masked statement, with its bound values in
    /// the extended protocol; a grant matching `fingerprint` answers
    /// without asking.
    /// `held`: what the approver sees and the grant's fingerprint, present
    /// exactly when `d` asks for an approval.
    async fn approval(
        &mut self,
        d: Arc<Decided>,
        held: Option<(String, String)>,
    ) -> Result<Held, String> {
        use super::super::session::{Asked, wait};
        use crate::approval::{RequestSpec, Resolution};
        let Some((shown, fingerprint)) = held else {
            return Ok(Held::Go(d));
        };
        let Some(approvals) = self.info.approvals.clone() else {
            return Ok(Held::Go(d));
        };
        // What was forwarded before must be answered while this waits.
        self.flush()
            .await
            .map_err(|e| format!("writing to upstream: {e}"))?;
        let spec = RequestSpec {
            account: self.info.account.clone(),
            target: self.info.target.clone(),
            protocol: "postgres".into(),
            session: Some(self.info.session),
            process: self.info.process.clone(),
            identity: self.info.identity.clone(),
            statement: shown.clone(),
            fingerprint,
            policy: Some(self.info.policy.name().to_owned()),
            rule: d.rule.clone(),
            risk: d.class.clone(),
            account_uids: self.info.account_uids.clone(),
        };
        // This execution's decision, recorded with what the approver saw.
        let after = |allow: bool, why: String| {
            let mut a = d.after_approval(allow, why);
            a.statement.clone_from(&shown);
            Arc::new(a)
        };
        // Held by the grant's allow-list: what `approve --learn` adds to it.
        let learn = (d.allowlist.verdict == Some(crate::policy::allowlist::ListVerdict::NotListed))
            .then(|| {
                crate::approval::learn::LearnCandidate::of(
                    self.info.allowlist.as_ref(),
                    d.fingerprint.as_deref(),
                    "postgres",
                    &d.statement,
                )
            })
            .flatten();
        let hold = match super::super::session::ask_learnable(&approvals, spec, learn).await {
            Asked::Granted(why) => return Ok(Held::Go(after(true, why))),
            Asked::Unrecorded(why) => return Ok(Held::Refuse(after(false, why), "42501")),
            Asked::Held(h) => h,
        };
        let mut notice = BytesMut::new();
        backend::notice_response(
            &mut notice,
            "NOTICE",
            "01000",
            &format!("Warden: statement held for approval (request {})", hold.id),
            Some(&format!(
                "{}; waiting up to {}s",
                d.detail().unwrap_or_else(|| "policy".into()),
                approvals.config().approval_timeout_secs
            )),
            Some(&format!("an approver runs: {}", hold.approve_line())),
        )
        .map_err(|e| e.to_string())?;
        self.queue(Expect::Refusal {
            error: notice.freeze(),
            ready: false,
        });
        let cap = self.info.max_message.saturating_mul(2);
        let hold_slot = Arc::clone(&self.info.hold);
        let mut client = HeldReader {
            io: &mut self.client,
            buf: &mut self.buf,
        };
        let waited = wait(&approvals, hold, &mut client, cap, Some(&hold_slot)).await;
        let why = waited.why;
        Ok(match waited.resolution {
            Resolution::Approved { .. } => Held::Go(after(true, why)),
            // A withdrawal (cancel, the client gone) reads like a cancel.
            Resolution::Withdrawn { .. } => Held::Refuse(after(false, why), "57014"),
            Resolution::Denied { .. } | Resolution::TimedOut | Resolution::Failed { .. } => {
                Held::Refuse(after(false, why), "42501")
            }
        })
    }

    /// [`refuse`](Self::refuse) with a SQLSTATE of the caller's.
    async fn refuse_with(
        &mut self,
        d: &Decided,
        via: &'static str,
        ready: bool,
        code: &str,
    ) -> Result<(), String> {
        let ev = self
            .info
            .statement_event(self.seq, d, via, StatementPhase::Request);
        if let Err(e) = self.info.audit.record(ev).await {
            tracing::error!(error = %e, "could not audit a refused statement");
        }
        let message = if code == "57014" {
            format!(
                "canceling statement due to user request (Warden: {})",
                d.reason.as_deref().unwrap_or("withdrawn")
            )
        } else {
            format!("Warden: {}", d.client_message())
        };
        let error = match &d.answer {
            // The server's own answer to text its grammar rejects.
            Answer::Syntax { position } => {
                let mut b = BytesMut::new();
                match backend::error_response_at(
                    &mut b,
                    "ERROR",
                    code,
                    &d.client_message(),
                    *position,
                ) {
                    Ok(()) => b.freeze(),
                    Err(_) => super::error_bytes("ERROR", code, "syntax error", None, None),
                }
            }
            Answer::UndefinedPrepared { .. } | Answer::DuplicatePrepared { .. } => {
                super::error_bytes("ERROR", code, &d.client_message(), None, None)
            }
            Answer::Policy => {
                super::error_bytes("ERROR", code, &message, d.detail().as_deref(), d.hint())
            }
        };
        self.abort_upstream(ready)?;
        self.queue(Expect::Refusal { error, ready });
        Ok(())
    }

    /// Gives the upstream an error where the refused statement was, so the
    /// transaction around it ends as the server would end it: `Execute` of
    /// a portal that does not exist (the unnamed statement and portal are
    /// left alone); `sync` (simple query, function call): followed by a
    /// Sync, whose ReadyForQuery tells the client the new status.
    fn abort_upstream(&mut self, sync: bool) -> Result<(), String> {
        frontend::execute(&mut self.out, ABORT_PORTAL, 0).map_err(|e| e.to_string())?;
        if sync {
            frontend::sync(&mut self.out);
        }
        self.queue(Expect::Abort { sync });
        Ok(())
    }

    async fn function_call(&mut self, frame: &Frame, oid: u32) -> Result<(), String> {
        let name = match self.functions.get(&oid) {
            Some(n) => Some(n.clone()),
            None => {
                let n = self.lookup_function(oid).await;
                if let Some(n) = &n {
                    self.functions.insert(oid, n.clone());
                }
                n
            }
        };
        let d = self
            .decider
            .function_call(oid, name.as_ref().map(|(s, n)| (s.as_str(), n.as_str())));
        self.seq += 1;
        if !d.allowed() {
            self.refuse(&d, "function_call", true).await?;
            return Ok(());
        }
        if let Some(stmt) = self.audit_request(&d, "function_call").await? {
            self.forward(frame);
            self.runs += 1;
            self.queue(Expect::FunctionCall {
                stmt,
                runs: self.runs,
            });
        }
        Ok(())
    }

    /// `schema.name` of a function by oid, asked of the upstream on this
    /// session's connection (a FunctionCall is only sent when nothing else
    /// is in flight).
    async fn lookup_function(&mut self, oid: u32) -> Option<(String, String)> {
        let sql = format!(
            "SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p \
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = {oid}"
        );
        let rows = self.internal_query(&sql).await.ok()?;
        let row = rows.first()?;
        match (row.first()?, row.get(1)?) {
            (Some(s), Some(n)) => Some((s.clone(), n.clone())),
            _ => None,
        }
    }

    /// Runs a query of Warden's own on the upstream connection; its answers
    /// never reach the client. Not inside an extended-protocol batch.
    async fn internal_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let (reply, answer) = oneshot::channel();
        frontend::query(&mut self.out, sql).map_err(|e| e.to_string())?;
        self.queue(Expect::Internal { reply });
        self.flush().await.map_err(|e| e.to_string())?;
        answer.await.map_err(|_| "session closed".to_owned())?
    }
}

/// Upstream → client.
struct Downstream<R, W> {
    info: Arc<SessionInfo>,
    upstream: R,
    buf: BytesMut,
    client: W,
    out: BytesMut,
    expect: mpsc::UnboundedReceiver<Expect>,
    queue: VecDeque<Expect>,
    refused_parses: RefusedParses,
    /// Transaction status of the last ReadyForQuery.
    status: u8,
    /// See [`Upstream::settled`].
    settled: Settled,
    /// ReadyForQuery messages passed that answer an [`Expect::awaits_ready`].
    readies: u64,
    ends: Arc<Ends>,
    /// An error since the last ReadyForQuery: the server skips extended
    /// protocol messages up to the next Sync.
    failed: bool,
    /// Columns of described portals.
    portal_columns: HashMap<String, Columns>,
    param_types: ParamTypes,
    /// Result being summarised (the statement at the head of the queue).
    current: Option<Summary>,
    counters: Arc<Counters>,
}

/// What came back for one statement so far.
#[derive(Default)]
struct Summary {
    columns: Option<Columns>,
    rows: u64,
    masked: u64,
    sample: Vec<Vec<Option<String>>>,
    tags: Vec<String>,
    sqlstate: Option<String>,
    error: Option<String>,
    /// Rows of an internal query.
    internal: Vec<Vec<Option<String>>>,
    /// CopyData rows seen (COPY TO).
    copy_rows: u64,
}

impl<R, W> Downstream<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async fn run(mut self) -> End {
        let end = self.pump().await;
        let _ = self.flush().await;
        // The session is over either way: the client reads what was sent
        // (a FATAL error included), then the end of the stream.
        let _ = self.client.shutdown().await;
        end
    }

    async fn pump(&mut self) -> End {
        loop {
            // Everything that needs no upstream answer goes out first.
            self.take_queued();
            self.local();
            loop {
                // A large message is passed on as it arrives when nothing
                // in it has to be read whole; else it is held, up to
                // `max_message_bytes`.
                match frame::header(&self.buf, frame::DEFAULT_MAX_MESSAGE) {
                    Ok(Some((tag, total))) if total > self.stream_from() => {
                        self.take_queued();
                        match self.must_hold(tag) {
                            None => {
                                if let Err(end) = self.stream(tag, total).await {
                                    return end;
                                }
                                self.local();
                                continue;
                            }
                            Some((what, why)) if total - 1 > self.info.max_message => {
                                return self.fatal(Fatal::TooLarge {
                                    what,
                                    why,
                                    len: total - 1,
                                    max: self.info.max_message,
                                });
                            }
                            Some(_) => {}
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return self.fatal(Fatal::Malformed(e)),
                }
                let frame = match decode_frame(&mut self.buf, self.info.max_message) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return self.fatal(Fatal::Malformed(e)),
                };
                self.take_queued();
                if let Err(f) = self.message(frame) {
                    return self.fatal(f);
                }
                self.local();
                if self.out.len() >= FLUSH_BYTES
                    && let Err(e) = self.flush().await
                {
                    return End::Error(format!("writing to client: {e}"));
                }
            }
            if let Err(e) = self.flush().await {
                return End::Error(format!("writing to client: {e}"));
            }
            tokio::select! {
                read = self.upstream.read_buf(&mut self.buf) => match read {
                    Ok(0) => return End::UpstreamClosed,
                    Ok(_) => {}
                    Err(e) => return End::Error(format!("reading from upstream: {e}")),
                },
                e = self.expect.recv() => match e {
                    Some(e) => self.queue.push_back(e),
                    None => return End::ClientClosed,
                },
            }
        }
    }

    /// Messages longer than this are streamed when they can be.
    fn stream_from(&self) -> usize {
        STREAM_FROM.min(self.info.max_message)
    }

    /// Whether a message with this tag, arriving now, must be read whole:
    /// `None` when it can be passed on as it streams, else what it is and
    /// why it must be held (for [`Fatal::TooLarge`]).
    fn must_hold(&self, tag: u8) -> Option<(&'static str, &'static str)> {
        let ours = matches!(
            self.queue.front(),
            Some(Expect::Internal { .. } | Expect::Describe { swallow: true, .. })
        );
        let patterns = self.info.masker.as_ref().is_some_and(|m| m.has_patterns());
        match tag {
            _ if ours => Some(("message", " (an answer to Warden's own query)")),
            b'D' if self.row_needs_masking() => Some(("result row", " to mask it")),
            b'd' if patterns => Some(("COPY data message", " to mask it")),
            b'V' if patterns => Some(("function result", " to mask it")),
            b'D' | b'd' | b'V' => None,
            _ => Some((backend::name_of(tag).unwrap_or("message"), " to read it")),
        }
    }

    /// The columns of the rows arriving now.
    fn row_columns(&self) -> Option<Columns> {
        match self.queue.front() {
            Some(Expect::Execute { portal, .. }) => self.portal_columns.get(portal).cloned(),
            _ => self.current.as_ref().and_then(|s| s.columns.clone()),
        }
    }

    /// A row arriving now needs masking when the grant masks and one of
    /// its columns has a column rule, or is text and the masking has
    /// patterns (they apply to every text value, so with patterns every
    /// text row is read whole), or its columns are not known.
    fn row_needs_masking(&self) -> bool {
        let Some(masker) = &self.info.masker else {
            return false;
        };
        self.row_columns().is_none_or(|cols| {
            cols.iter()
                .any(|c| c.strategy.is_some() || (c.textual && masker.has_patterns()))
        })
    }

    /// Passes on a message of `total` bytes (tag included) from the
    /// upstream to the client as it arrives, holding at most a read's
    /// worth of it. A DataRow is walked on its way for the row count and
    /// the sample.
    async fn stream(&mut self, tag: u8, total: usize) -> Result<(), End> {
        self.flush()
            .await
            .map_err(|e| End::Error(format!("writing to client: {e}")))?;
        let body = total - frame::HEADER_LEN;
        let sampling = self
            .current
            .as_ref()
            .is_none_or(|s| s.sample.len() < SAMPLE_ROWS);
        let keep = if sampling { SAMPLE_VALUE_CHARS * 4 } else { 0 };
        let mut scan = (tag == b'D').then(|| DataRowScanner::new(body, keep));
        let mut remaining = total;
        let mut header = frame::HEADER_LEN;
        loop {
            if !self.buf.is_empty() {
                let piece = self.buf.split_to(remaining.min(self.buf.len()));
                let skip = header.min(piece.len());
                header -= skip;
                if let Some(s) = scan.as_mut()
                    && let Err(e) = s.feed(&piece[skip..])
                {
                    return Err(self.fatal(Fatal::Malformed(e)));
                }
                self.client
                    .write_all(&piece)
                    .await
                    .map_err(|e| End::Error(format!("writing to client: {e}")))?;
                self.counters
                    .down
                    .fetch_add(piece.len() as u64, Ordering::Relaxed);
                remaining -= piece.len();
                if remaining == 0 {
                    break;
                }
            }
            self.buf.reserve(STREAM_CHUNK);
            match self.upstream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(End::UpstreamClosed),
                Ok(_) => {}
                Err(e) => return Err(End::Error(format!("reading from upstream: {e}"))),
            }
        }
        if let Some(s) = scan {
            let values = match s.finish() {
                Ok(v) => v,
                Err(e) => return Err(self.fatal(Fatal::Malformed(e))),
            };
            let values: Vec<Option<&[u8]>> = values
                .iter()
                .map(|v| v.as_deref().map(utf8_prefix))
                .collect();
            let cols = self.row_columns();
            self.count_row(&values, cols.as_deref().map(|c| c.as_slice()));
        }
        Ok(())
    }

    /// Ends the session: the client gets a FATAL error after what it was
    /// already sent, and every statement still owed an answer gets its
    /// result event (the one being answered with the reason, the others
    /// with the fact that the session ended before their answer).
    fn fatal(&mut self, f: Fatal) -> End {
        let why = f.to_string();
        let code = f.sqlstate();
        self.take_queued();
        let mut first = true;
        while let Some(front) = self.queue.front() {
            if matches!(
                front,
                Expect::Execute { .. } | Expect::Query { .. } | Expect::FunctionCall { .. }
            ) {
                let s = self.summary();
                s.sqlstate = Some(code.to_owned());
                s.error = Some(if first {
                    why.clone()
                } else {
                    format!("the session ended before this statement was answered: {why}")
                });
                first = false;
            }
            self.finish_front();
        }
        let b = super::error_bytes("FATAL", code, &format!("Warden: {why}"), None, None);
        self.out.extend_from_slice(&b);
        tracing::warn!(error = %why, "postgres session ended by the upstream half");
        End::Error(why)
    }

    fn take_queued(&mut self) {
        while let Ok(e) = self.expect.try_recv() {
            self.queue.push_back(e);
        }
    }

    /// Sends queued refusals that have reached the head of the queue.
    fn local(&mut self) {
        while self.queue.front().is_some_and(Expect::is_local) {
            match self.queue.pop_front() {
                Some(Expect::Refusal { error, ready }) => {
                    self.out.extend_from_slice(&error);
                    if ready {
                        backend::ready_for_query(&mut self.out, self.status);
                    }
                }
                Some(Expect::Barrier { reply }) => {
                    let _ = reply.send(self.failed);
                }
                _ => {}
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        // Audit (pipelined durability): nothing goes to the client before
        // the records of the statements forwarded so far are on disk.
        self.info
            .audit
            .release_ready()
            .await
            .map_err(std::io::Error::other)?;
        if !self.out.is_empty() {
            self.counters
                .down
                .fetch_add(self.out.len() as u64, Ordering::Relaxed);
            self.client.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    fn pass(&mut self, frame: &Frame) {
        self.out.extend_from_slice(&frame.raw);
    }

    fn message(&mut self, frame: Frame) -> Result<(), Fatal> {
        let msg = BackendMessage::parse(&frame).map_err(Fatal::Malformed)?;
        let internal = matches!(self.queue.front(), Some(Expect::Internal { .. }));
        match msg {
            // Asynchronous messages, valid at any time.
            BackendMessage::NoticeResponse(fields) => {
                if !internal {
                    if self.front_reads_masked() {
                        self.withheld_fields(&fields.0, false)?;
                    } else {
                        self.masked_fields(&frame, &fields.0, false)?;
                    }
                }
            }
            BackendMessage::ParameterStatus { name, value } => {
                // A setting that changes how SQL is tokenised, changed by
                // some path the policy did not see: stop rather than parse
                // the rest of the session wrongly. The client does not get
                // the new value (it would switch its own encoding).
                super::check_server_parameter(name, value).map_err(Fatal::UnsafeSetting)?;
                self.pass(&frame);
            }
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            } => match self.mask_str(payload) {
                Some(p) => backend::notification_response(&mut self.out, process_id, channel, &p)?,
                None => self.pass(&frame),
            },
            BackendMessage::ParseComplete
            | BackendMessage::BindComplete
            | BackendMessage::CloseComplete => {
                if matches!(
                    self.queue.front(),
                    Some(
                        Expect::ParseComplete { .. } | Expect::BindComplete | Expect::CloseComplete
                    )
                ) {
                    self.queue.pop_front();
                }
                self.pass(&frame);
            }
            BackendMessage::ParameterDescription { types } => {
                if let Some(Expect::Describe {
                    statement: Some(id),
                    ..
                }) = self.queue.front()
                    && let Some(known) = lock_types(&self.param_types).get_mut(id)
                {
                    // The server's types, for showing binary values to an
                    // approver.
                    *known = types;
                }
                if !self.swallowing() {
                    self.pass(&frame);
                }
            }
            BackendMessage::RowDescription { fields } => {
                let cols = self.columns(&fields);
                match self.queue.front() {
                    Some(Expect::Describe {
                        portal, swallow, ..
                    }) => {
                        if let Some(p) = portal {
                            self.portal_columns.insert(p.clone(), Arc::clone(&cols));
                        }
                        let swallow = *swallow;
                        self.queue.pop_front();
                        if !swallow {
                            self.pass(&frame);
                        }
                    }
                    Some(Expect::Internal { .. }) => {}
                    _ => {
                        self.summary().columns = Some(cols);
                        self.pass(&frame);
                    }
                }
            }
            BackendMessage::NoData => {
                if let Some(Expect::Describe {
                    portal, swallow, ..
                }) = self.queue.front()
                {
                    if let Some(p) = portal {
                        self.portal_columns.remove(p);
                    }
                    let swallow = *swallow;
                    self.queue.pop_front();
                    if !swallow {
                        self.pass(&frame);
                    }
                } else {
                    self.pass(&frame);
                }
            }
            BackendMessage::DataRow { values } => {
                if internal {
                    let row = values
                        .iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect();
                    self.summary().internal.push(row);
                    return Ok(());
                }
                self.data_row(&frame, &values)?;
            }
            BackendMessage::CommandComplete { tag } => {
                if internal {
                    return Ok(());
                }
                let tag = tag.to_owned();
                self.summary().tags.push(tag.clone());
                if let Some(n) = rows_of(&tag) {
                    let s = self.summary();
                    // SELECT/COPY counts are the rows sent; for writes the
                    // tag's count is what was affected.
                    if s.rows == 0 {
                        s.rows = n;
                    }
                }
                self.pass(&frame);
                if matches!(self.queue.front(), Some(Expect::Execute { .. })) {
                    self.finish_front();
                }
            }
            BackendMessage::EmptyQueryResponse | BackendMessage::PortalSuspended => {
                self.pass(&frame);
                if matches!(self.queue.front(), Some(Expect::Execute { .. })) {
                    self.finish_front();
                }
            }
            BackendMessage::ErrorResponse(fields) => {
                // The transaction the error ends (an implicit one reports
                // idle, not failed) may take a cursor WITH HOLD declared
                // in it: its ReadyForQuery is the next one.
                self.ends
                    .failed
                    .fetch_max(self.readies.saturating_add(1), Ordering::AcqRel);
                if let Some(Expect::Abort { sync }) = self.queue.front() {
                    // Warden's own abort: the client already has (or will
                    // get, in order) the refusal instead.
                    if !*sync {
                        self.queue.pop_front();
                    }
                    return Ok(());
                }
                if internal {
                    let msg = fields.get(b'M').unwrap_or("error").to_owned();
                    self.summary().error = Some(msg);
                    return Ok(());
                }
                let withheld = self.front_reads_masked();
                {
                    let code = fields.get(b'C').map(str::to_owned);
                    let msg = if withheld {
                        Some(WITHHELD.to_owned())
                    } else {
                        fields.get(b'M').map(|m| self.masked_text(m))
                    };
                    let s = self.summary();
                    s.sqlstate = code;
                    s.error = msg;
                }
                if withheld {
                    self.withheld_fields(&fields.0, true)?;
                } else {
                    self.masked_fields(&frame, &fields.0, true)?;
                }
                self.after_error();
            }
            BackendMessage::CopyOutResponse(ref f) | BackendMessage::CopyBothResponse(ref f) => {
                if f.overall != 0 && self.info.masker.is_some() {
                    // Binary COPY rows cannot be masked value by value:
                    // fail closed rather than send them unmasked.
                    return Err(Fatal::BinaryCopyOut);
                }
                // Rows of masked columns are masked by position: the
                // server's column count must be the one the analysis
                // expects, or a field would be masked in another's place
                // (`(row).*` expands to several).
                if let Some(copy) = self
                    .front_statement()
                    .and_then(|s| s.decided.columns.as_ref())
                    .and_then(|c| c.copy.as_ref())
                    && self.info.masker.is_some()
                    && copy.fields.len() != f.columns.len()
                {
                    return Err(Fatal::MaskedCopyRow(format!(
                        "the server copies {} columns where {} were expected",
                        f.columns.len(),
                        copy.fields.len()
                    )));
                }
                self.pass(&frame);
            }
            BackendMessage::CopyData(data) => {
                if internal {
                    return Ok(());
                }
                let by_column = self.copy_columns(data)?;
                let row: &[u8] = by_column.as_deref().unwrap_or(data);
                let masked = self
                    .info
                    .masker
                    .as_ref()
                    .filter(|m| m.has_patterns())
                    .and_then(|m| m.mask_patterns(row));
                match (masked, by_column.is_some()) {
                    (Some((bytes, n)), _) => {
                        self.summary().masked += n as u64;
                        backend::copy_data(&mut self.out, &bytes)?;
                    }
                    (None, true) => {
                        backend::copy_data(&mut self.out, row)?;
                    }
                    (None, false) => self.pass(&frame),
                }
            }
            BackendMessage::FunctionCallResponse { value } => {
                let masked = value.and_then(|v| {
                    self.info
                        .masker
                        .as_ref()
                        .filter(|m| m.has_patterns())
                        .and_then(|m| m.mask_patterns(v))
                });
                match masked {
                    Some((bytes, n)) => {
                        self.summary().masked += n as u64;
                        backend::function_call_response(&mut self.out, Some(&bytes))?;
                    }
                    None => self.pass(&frame),
                }
            }
            BackendMessage::ReadyForQuery { status } => {
                self.status = status;
                self.failed = false;
                if self.queue.iter().any(Expect::awaits_ready) {
                    self.readies += 1;
                    let at = match status {
                        b'I' => Some(&self.ends.idle),
                        b'E' => Some(&self.ends.failed),
                        _ => None,
                    };
                    if let Some(at) = at {
                        at.fetch_max(self.readies, Ordering::AcqRel);
                    }
                }
                // Everything before the Sync/Query that this answers is done.
                while let Some(front) = self.queue.front() {
                    match front {
                        Expect::Sync { runs } => {
                            self.settled.fetch_max(*runs, Ordering::AcqRel);
                            self.queue.pop_front();
                            self.pass(&frame);
                            return Ok(());
                        }
                        Expect::Query { runs, .. } | Expect::FunctionCall { runs, .. } => {
                            self.settled.fetch_max(*runs, Ordering::AcqRel);
                            self.finish_front();
                            self.pass(&frame);
                            return Ok(());
                        }
                        Expect::Internal { .. } => {
                            let s = self.current.take().unwrap_or_default();
                            if let Some(Expect::Internal { reply }) = self.queue.pop_front() {
                                let _ = reply.send(match s.error {
                                    Some(e) => Err(e),
                                    None => Ok(s.internal),
                                });
                            }
                            return Ok(());
                        }
                        Expect::Refusal { .. } | Expect::Barrier { .. } => self.local(),
                        Expect::Abort { sync: true } => {
                            // The status after the abort is what the
                            // refusal's own ReadyForQuery reports.
                            self.queue.pop_front();
                            return Ok(());
                        }
                        _ => {
                            self.finish_front();
                        }
                    }
                }
                self.pass(&frame);
            }
            BackendMessage::CopyInResponse(_)
            | BackendMessage::CopyDone
            | BackendMessage::Authentication(_)
            | BackendMessage::BackendKeyData { .. }
            | BackendMessage::NegotiateProtocolVersion { .. } => self.pass(&frame),
        }
        Ok(())
    }

    /// The statement at the head of the queue (the one being answered).
    fn front_statement(&self) -> Option<&Arc<Running>> {
        match self.queue.front()? {
            Expect::Execute { stmt, .. }
            | Expect::Query { stmt, .. }
            | Expect::FunctionCall { stmt, .. } => Some(stmt),
            _ => None,
        }
    }

    /// Whether the statement being answered reads a masked column.
    fn front_reads_masked(&self) -> bool {
        self.front_statement()
            .is_some_and(|s| s.decided.reads_masked())
    }

    /// A COPY TO row of a statement that copies masked columns, with
    /// those fields masked by their rule (`None`: not such a row, or
    /// nothing to change). A row that does not split as expected ends
    /// the session (fail closed).
    fn copy_columns(&mut self, row: &[u8]) -> Result<Option<Vec<u8>>, Fatal> {
        let Some(copy) = self
            .front_statement()
            .and_then(|s| s.decided.columns.as_ref())
            .and_then(|c| c.copy.clone())
        else {
            return Ok(None);
        };
        let Some(masker) = self.info.masker.clone() else {
            return Ok(None);
        };
        let s = self.summary();
        s.copy_rows += 1;
        if copy.header && s.copy_rows == 1 {
            return Ok(None);
        }
        let out = copy
            .mask_row(row, &|strategy, v| masker.apply(strategy, v))
            .map_err(|e| Fatal::MaskedCopyRow(e.to_string()))?;
        if out.is_some() {
            self.summary().masked += copy.fields.iter().filter(|f| f.is_some()).count() as u64;
        }
        Ok(out)
    }

    /// ErrorResponse / NoticeResponse of a statement that reads masked
    /// columns: its texts may quote a value (`invalid input syntax for
    /// type integer: "Ana"`), so only severity, SQLSTATE, position and
    /// the server's source location are kept; the message is generic.
    fn withheld_fields(&mut self, fields: &[(u8, &str)], error: bool) -> Result<(), Fatal> {
        let mut kept: Vec<(u8, &str)> = fields
            .iter()
            .filter(|(code, _)| matches!(code, b'S' | b'V' | b'C' | b'P' | b'F' | b'L' | b'R'))
            .copied()
            .collect();
        kept.push((b'M', WITHHELD));
        let f = backend::Fields(kept);
        if error {
            backend::error_fields(&mut self.out, &f)
        } else {
            backend::notice_fields(&mut self.out, &f)
        }
        .map_err(Fatal::Encode)
    }

    fn swallowing(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(Expect::Describe { swallow: true, .. } | Expect::Internal { .. })
        )
    }

    /// After an ErrorResponse: the server skips to the next Sync in
    /// extended mode; drop what it will not answer. A simple query's error
    /// is followed by its ReadyForQuery.
    fn after_error(&mut self) {
        if let Some(Expect::ParseComplete { id }) = self.queue.front() {
            self.refused_parses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(*id);
        }
        match self.queue.front() {
            Some(Expect::Query { .. } | Expect::FunctionCall { .. }) => {}
            Some(Expect::Sync { .. }) | None => self.failed = true,
            Some(_) => {
                self.failed = true;
                while let Some(front) = self.queue.front() {
                    if matches!(front, Expect::Sync { .. }) {
                        break;
                    }
                    // Refusals queued after the failing message would not
                    // have been reached by the server either.
                    self.finish_front();
                }
            }
        }
    }

    /// Pops the head expectation; for a statement, records its result.
    fn finish_front(&mut self) {
        let Some(front) = self.queue.pop_front() else {
            return;
        };
        if let Expect::Barrier { reply } = front {
            // Dropped by an error (or the session's end): what follows it
            // is skipped by the server.
            let _ = reply.send(true);
            return;
        }
        let summary = self.current.take().unwrap_or_default();
        let stmt = match front {
            Expect::Execute { stmt, .. }
            | Expect::Query { stmt, .. }
            | Expect::FunctionCall { stmt, .. } => stmt,
            Expect::Internal { reply } => {
                let _ = reply.send(Err("interrupted".into()));
                return;
            }
            _ => return,
        };
        let mut ev =
            self.info
                .statement_event(stmt.seq, &stmt.decided, stmt.via, StatementPhase::Result);
        ev.rows = Some(summary.rows);
        ev.values_masked = Some(summary.masked);
        ev.duration_us = Some(stmt.started.elapsed().as_micros() as u64);
        ev.command_tag = (!summary.tags.is_empty()).then(|| summary.tags.join("; "));
        ev.sqlstate = summary.sqlstate;
        ev.error = summary.error;
        ev.result = summary.columns.map(|cols| ResultSummary {
            columns: cols.iter().map(|c| c.name.clone()).collect(),
            sample: summary.sample,
        });
        self.info.audit.record_detached(ev);
    }

    fn summary(&mut self) -> &mut Summary {
        self.current.get_or_insert_with(Summary::default)
    }

    /// Resolves a RowDescription's columns for masking.
    /// A column whose origin the session's catalog snapshot cannot place
    /// (a relation or column created after it) is withheld (NULL), and
    /// the snapshot is marked stale.
    fn columns(&self, fields: &[FieldDescription<'_>]) -> Columns {
        let catalog = self.info.catalog.get();
        Arc::new(
            fields
                .iter()
                .map(|f| Column {
                    name: f.name.to_owned(),
                    strategy: match catalog.origin(f.table_oid, f.column_attr) {
                        Origin::Unmasked => None,
                        Origin::Masked(s) => Some(s),
                        Origin::Unplaced => {
                            warn!(
                                column.table_oid = f.table_oid,
                                column.attnum = f.column_attr,
                                "result column from a relation the catalog snapshot does not know: withheld"
                            );
                            self.info.catalog.mark_stale();
                            Some(Strategy::Null)
                        }
                    },
                    textual: f.format == 0 || textual_type(f.type_oid),
                    marker_fits: f.format == 0 || (textual_type(f.type_oid) && f.type_oid != 18),
                })
                .collect(),
        )
    }

    fn data_row(&mut self, frame: &Frame, values: &[Option<&[u8]>]) -> Result<(), Fatal> {
        let cols = self.row_columns();
        let Some(masker) = self.info.masker.clone() else {
            self.count_row(values, None);
            self.pass(frame);
            return Ok(());
        };
        if cols.is_none() && self.front_reads_masked() {
            // Rows of a statement that reads masked columns, with no
            // column description to find them by: every value is withheld
            // (fail closed; not expected, as Warden describes every portal).
            let nulls: Vec<Option<&[u8]>> = vec![None; values.len()];
            backend::encode_data_row(&mut self.out, nulls.iter().copied())?;
            self.summary().masked += values.len() as u64;
            self.count_row(&nulls, None);
            return Ok(());
        }
        let mut changed: Vec<(usize, Masked)> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let col = cols.as_ref().and_then(|c| c.get(i));
            let textual = col.is_none_or(|c| c.textual);
            match col.and_then(|c| c.strategy) {
                Some(strategy) => {
                    changed.push((
                        i,
                        if col.is_some_and(|c| c.marker_fits) {
                            masker.apply(strategy, v)
                        } else {
                            // A binary non-text value cannot hold a marker.
                            Masked::Null
                        },
                    ));
                }
                None if textual && masker.has_patterns() => {
                    // mask_value: a pattern hit under `pattern_strategy =
                    // "null"` makes the whole value SQL NULL.
                    if let Some((masked, _)) = masker.mask_value(v) {
                        changed.push((i, masked));
                    }
                }
                None => {}
            }
        }
        if changed.is_empty() {
            self.count_row(values, cols.as_deref().map(|c| c.as_slice()));
            self.pass(frame);
            return Ok(());
        }
        let masked_count = changed.len() as u64;
        let mut next = changed.iter().peekable();
        let new_values: Vec<Option<&[u8]>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| match next.peek() {
                Some((j, m)) if *j == i => {
                    next.next();
                    match m {
                        Masked::Null => None,
                        Masked::Value(b) => Some(b.as_slice()),
                    }
                }
                _ => *v,
            })
            .collect();
        backend::encode_data_row(&mut self.out, new_values.iter().copied())?;
        self.summary().masked += masked_count;
        self.count_row(&new_values, cols.as_deref().map(|c| c.as_slice()));
        Ok(())
    }

    /// Counts a row sent to the client and keeps the first few (already
    /// masked) for the summary.
    fn count_row(&mut self, values: &[Option<&[u8]>], cols: Option<&[Column]>) {
        let s = self.current.get_or_insert_with(Summary::default);
        s.rows += 1;
        if s.sample.len() < SAMPLE_ROWS {
            let row = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let textual = cols.and_then(|c| c.get(i)).is_none_or(|c| c.textual);
                    v.filter(|_| textual).map(|b| {
                        String::from_utf8_lossy(b)
                            .chars()
                            .take(SAMPLE_VALUE_CHARS)
                            .collect()
                    })
                })
                .collect();
            s.sample.push(row);
        }
    }

    /// ErrorResponse / NoticeResponse with every text field masked.
    fn masked_fields(
        &mut self,
        frame: &Frame,
        fields: &[(u8, &str)],
        error: bool,
    ) -> Result<(), Fatal> {
        let mut any = false;
        let new: Vec<(u8, String)> = fields
            .iter()
            .map(|(code, v)| match self.mask_str(v) {
                Some(m) => {
                    any = true;
                    (*code, m)
                }
                None => (*code, (*v).to_owned()),
            })
            .collect();
        if !any {
            self.pass(frame);
            return Ok(());
        }
        let borrowed = backend::Fields(new.iter().map(|(c, v)| (*c, v.as_str())).collect());
        if error {
            backend::error_fields(&mut self.out, &borrowed)
        } else {
            backend::notice_fields(&mut self.out, &borrowed)
        }?;
        Ok(())
    }

    /// Pattern-masked text, or `None` when nothing matched.
    fn mask_str(&self, s: &str) -> Option<String> {
        let m: &Masker = self.info.masker.as_deref()?;
        let (out, n) = m.mask_str(s);
        (n > 0).then(|| out.into_owned())
    }

    /// Text for the audit trail: masked with the audit detectors.
    fn masked_text(&self, s: &str) -> String {
        self.info.text_masker.mask_str(s).0.into_owned()
    }
}

/// The row count in a command tag (`SELECT 5`, `INSERT 0 5`, `UPDATE 5`).
fn rows_of(tag: &str) -> Option<u64> {
    let mut it = tag.split(' ');
    let cmd = it.next()?;
    let last = tag.rsplit(' ').next()?;
    match cmd {
        "SELECT" | "UPDATE" | "DELETE" | "INSERT" | "MERGE" | "FETCH" | "MOVE" | "COPY" => {
            last.parse().ok()
        }
        _ => None,
    }
}

/// `b` without an incomplete UTF-8 sequence at its end (a value cut for a
/// sample).
fn utf8_prefix(b: &[u8]) -> &[u8] {
    match std::str::from_utf8(b) {
        Err(e) if e.error_len().is_none() => &b[..e.valid_up_to()],
        _ => b,
    }
}

/// Types whose binary representation is the text itself: the pattern
/// backstop applies to them in binary format too.
fn textual_type(oid: u32) -> bool {
    // text, varchar, bpchar, name, char, json, xml, unknown, citext-like
    // domains are resolved to their base type by the server.
    matches!(oid, 25 | 1043 | 1042 | 19 | 18 | 114 | 142 | 705)
}

/// The approval fingerprint of a statement: its shape (literals
/// generalised) for reads and writes; the exact text for DDL, privileged
/// and unknown statements, whose literals are code, commands, paths,
/// setting or object names that the approver saw and a grant must not
/// generalise.
fn statement_fingerprint(class: &str, sql: &str) -> String {
    use crate::approval::fingerprint::{exact_fingerprint, shape_fingerprint};
    match class {
        "read" | "write" => shape_fingerprint(
            "postgres",
            crate::policy::sql::statement_shape(sql).as_deref(),
            sql,
        ),
        _ => exact_fingerprint("postgres", sql),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_counts_come_from_command_tags() {
        assert_eq!(rows_of("SELECT 5"), Some(5));
        assert_eq!(rows_of("INSERT 0 7"), Some(7));
        assert_eq!(rows_of("UPDATE 0"), Some(0));
        assert_eq!(rows_of("COPY 12"), Some(12));
        assert_eq!(rows_of("CREATE TABLE"), None);
        assert_eq!(rows_of("BEGIN"), None);
    }

    #[test]
    fn textual_types() {
        assert!(textual_type(25));
        assert!(textual_type(1043));
        assert!(!textual_type(23));
        assert!(!textual_type(3802), "jsonb binary has a version byte");
    }
}
