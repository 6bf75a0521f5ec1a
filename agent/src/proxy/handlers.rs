//! The protocol runtimes as [`Handler`]s: how the accept path reaches the
//! PostgreSQL, HTTP and MySQL handlers without naming them.

use std::time::Duration;

use tokio::net::TcpStream;

use super::context::{BoxFuture, Handler};
use super::http::HttpRuntime;
use super::mysql::MysqlRuntime;
use super::postgres::PgRuntime;
use super::{Caller, Outcome};
use crate::audit::store::AuditHandle;
use crate::config::{Config, Protocol, Target};

impl Handler for PgRuntime {
    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    fn serve<'a>(
        &'a self,
        config: &'a Config,
        audit: &'a AuditHandle,
        target: &'a Target,
        caller: Caller,
        stream: TcpStream,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(super::postgres::serve(
            self, config, audit, target, caller, stream,
        ))
    }

    /// SQLSTATE 53300 too_many_connections, after the startup packet.
    fn refuse_connection<'a>(
        &'a self,
        target: &'a Target,
        stream: TcpStream,
        detail: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(super::postgres::refuse_connection(
            self, target, stream, "53300", detail,
        ))
    }

    /// Sessions opened before a reload stay cancellable.
    fn take_over(&mut self, previous: &dyn Handler) {
        if let Some(previous) = previous.as_any().downcast_ref::<PgRuntime>() {
            self.keep_cancels_of(previous);
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Handler for HttpRuntime {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn serve<'a>(
        &'a self,
        config: &'a Config,
        audit: &'a AuditHandle,
        target: &'a Target,
        caller: Caller,
        stream: TcpStream,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(super::http::serve(
            self, config, audit, target, caller, stream,
        ))
    }

    /// 503 with `Retry-After`.
    fn refuse_connection<'a>(
        &'a self,
        target: &'a Target,
        stream: TcpStream,
        detail: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(super::http::refuse_connection(self, target, stream, detail))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Handler for MysqlRuntime {
    fn protocol(&self) -> Protocol {
        Protocol::Mysql
    }

    fn serve<'a>(
        &'a self,
        config: &'a Config,
        audit: &'a AuditHandle,
        target: &'a Target,
        caller: Caller,
        stream: TcpStream,
    ) -> BoxFuture<'a, Outcome> {
        let agent = &config.agent;
        let timeout = Duration::from_millis(agent.connect_timeout_ms);
        Box::pin(super::mysql::serve(
            self,
            audit,
            target,
            caller,
            stream,
            (agent.upstream_mark, timeout),
        ))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
