//! What a client may cost before and after its signature is checked: body pacing and
//! deadlines (`pace`), per-client request and upload limits (`per_ip`), the bytes of bodies
//! no signature vouches for yet (`budget`), and the cap on open connections
//! (`connections`). All of it costs nothing while off, and the defaults that are on cost an
//! atomic add per connection or a booking per 256 KiB of an unverified body.

pub mod budget;
pub mod connections;
pub mod pace;
pub mod per_ip;

pub use budget::{Budget, Hold};
pub use connections::{ConnectionCap, ConnectionGuard};
pub use pace::{body_deadline, Pace};
pub use per_ip::{ClientKey, PerIp, Refused, UploadGuard};
