//! Sans-I/O HTTP/1.1: request parsing, response heads, the cached Date. No sockets, no clock
//! reads outside `date`, no allocation on the request path.

pub mod date;
pub mod fields;
pub mod request;
pub mod response;

pub use request::{parse, Method, ParseLimits, Parsed, Reject, Request, Version};
pub use response::Status;
