//! The executor every statement of the backend runs through: the connection pool, used one of
//! two ways.
//!
//! - **Direct** (the default): statements run on pooled connections as sqlx runs them, each
//!   prepared once per connection under a name and cached.
//! - **Transaction pooling** (behind PgBouncer with `pool_mode = transaction`, or any pooler
//!   that hands a server connection to a client only for one transaction): nothing may outlive
//!   a transaction, because the next one may run on another server connection. So every
//!   statement runs inside an explicit transaction (one of its own when it has none) and is
//!   prepared unnamed, which the server forgets when the next statement is prepared. A
//!   statement's parse and its execution are two protocol exchanges; inside a transaction both
//!   reach the same server connection. The cost is two more round trips per single-statement
//!   operation (`BEGIN`, `COMMIT`) and a parse per execution.
//!
//! [`Db`] is an [`Executor`] (`&db`); [`Db::begin`] returns a [`Tx`] whose connection
//! (`&mut *tx`) is one too, so call sites read as they would with sqlx's own pool and
//! transaction types.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgPool, Postgres, Transaction};

/// The pool and how statements use it.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    transaction_pooling: bool,
    poll_interval: Duration,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("transaction_pooling", &self.transaction_pooling).finish_non_exhaustive()
    }
}

impl Db {
    /// Statements on `pool`, whose connections reach Postgres directly (or through a pooler in
    /// session mode).
    pub fn new(pool: PgPool) -> Self {
        Self { pool, transaction_pooling: false, poll_interval: Duration::ZERO }
    }

    /// Statements on `pool`, whose connections go through a pooler in transaction mode;
    /// wakeups come from polling every `poll_interval` instead of `LISTEN`.
    pub fn transaction_pooled(pool: PgPool, poll_interval: Duration) -> Self {
        Self { pool, transaction_pooling: true, poll_interval }
    }

    /// How often to poll for what `LISTEN` would wake for: `None` when listening is possible.
    pub fn poll_interval(&self) -> Option<Duration> {
        self.transaction_pooling.then_some(self.poll_interval)
    }

    /// The pool underneath.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether statements are kept to one transaction each (see the module documentation).
    pub fn transaction_pooling(&self) -> bool {
        self.transaction_pooling
    }

    /// Begins a transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx { conn: TxConn { tx: self.pool.begin().await?, unnamed: self.transaction_pooling } })
    }
}

impl From<PgPool> for Db {
    /// Statements directly on `pool` ([`Db::new`]).
    fn from(pool: PgPool) -> Self {
        Self::new(pool)
    }
}

/// An open transaction; `&mut *tx` executes statements in it. Dropped without
/// [`commit`](Self::commit), it rolls back, but only later: sqlx queues the `ROLLBACK` and sends
/// it from the pool's background return of the connection, so the row locks it took outlive
/// the call by a moment. A call that
/// ends without writing after it locked rows therefore ends with [`abandon`](Self::abandon),
/// which rolls back before it answers (a claim right after a refused call would otherwise skip
/// the still-locked row).
pub struct Tx {
    conn: TxConn,
}

impl Tx {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.conn.tx.commit().await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.conn.tx.rollback().await
    }

    /// Rolls back, then hands back `answer`: how a call ends that writes nothing after it took
    /// locks (a refusal, or an answer such as "already done"). A rollback that fails leaves a
    /// broken connection, which the pool closes; the server then ends the transaction and its
    /// locks all the same.
    pub async fn abandon<A>(self, answer: A) -> A {
        if let Err(e) = self.conn.tx.rollback().await {
            tracing::debug!(error = %e, "rolling back an abandoned transaction failed; its connection is closed");
        }
        answer
    }
}

impl Deref for Tx {
    type Target = TxConn;
    fn deref(&self) -> &TxConn {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut TxConn {
        &mut self.conn
    }
}

/// The connection of a [`Tx`]: an [`Executor`] as `&mut TxConn`.
pub struct TxConn {
    tx: Transaction<'static, Postgres>,
    unnamed: bool,
}

impl fmt::Debug for TxConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxConn").field("unnamed", &self.unnamed).finish_non_exhaustive()
    }
}

/// A statement prepared unnamed: the server keeps it only until the next one is prepared.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(&self) -> &'q str {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

type Item = Result<Either<PgQueryResult, PgRow>, sqlx::Error>;

/// Ends a statement's own transaction: commits after success; after a failure rolls back at
/// once, so the pooler gets its server connection back now rather than when this pooled
/// connection is next used.
async fn end<T>(tx: Transaction<'static, Postgres>, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

impl<'c> Executor<'c> for &'c mut TxConn {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Item>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if self.unnamed { (&mut *self.tx).fetch_many(Unnamed(query)) } else { (&mut *self.tx).fetch_many(query) }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if self.unnamed {
            (&mut *self.tx).fetch_optional(Unnamed(query))
        } else {
            (&mut *self.tx).fetch_optional(query)
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        (&mut *self.tx).prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        (&mut *self.tx).describe(sql)
    }
}

impl<'p> Executor<'p> for &'_ Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Item>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.transaction_pooling {
            return self.pool.fetch_many(query);
        }
        let pool = self.pool.clone();
        futures::stream::once(async move {
            let mut tx = pool.begin().await?;
            let items: Result<Vec<Either<PgQueryResult, PgRow>>, _> =
                (&mut *tx).fetch_many(Unnamed(query)).try_collect().await;
            let items = end(tx, items).await?;
            Ok::<_, sqlx::Error>(futures::stream::iter(items.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.transaction_pooling {
            return self.pool.fetch_optional(query);
        }
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut tx = pool.begin().await?;
            let row = (&mut *tx).fetch_optional(Unnamed(query)).await;
            end(tx, row).await
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>> {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>> {
        self.pool.describe(sql)
    }
}
