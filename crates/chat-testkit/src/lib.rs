//! Real servers for the test suites, each a process of the test's own on a
//! free loopback port (never the machine's shared one), killed when dropped.
//! The suites that use them are `#[ignore]`d; asked for without the binary
//! installed, they fail saying what to install, never pass.

mod moto;
mod redis_server;

pub use moto::MotoServer;
pub use redis_server::RedisServer;

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
