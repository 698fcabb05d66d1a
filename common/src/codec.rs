//! The protobuf codec every licsync gRPC service and client uses: tonic's prost codec with
//! smaller per-RPC buffers.
//!
//! tonic allocates an 8 KiB encode buffer and an 8 KiB decode buffer for every RPC up front and
//! keeps them for the RPC's life. A control plane holds one long-lived `Sync` stream per data
//! plane, so at 10,000 data planes those defaults alone are ~160 MiB of mostly empty buffers,
//! while the messages on the stream are heartbeats (tens of bytes) and license updates (a few
//! KiB). With 256-byte buffers that grow on demand a stream pays for what it carries: the
//! data plane's side of a stream (Acks, heartbeats) never outgrows them. The fleet benchmark
//! (`BENCHMARKS.md`) measured the difference (8 KiB → 1 KiB, then 1 KiB → 256 bytes: 40.6 →
//! 39.0 KiB per data plane); the sync tests send licenses many times [`BUFFER_SIZE`] through
//! it.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Initial size and growth step of each RPC's encode and decode buffer.
pub const BUFFER_SIZE: usize = 256;
/// How much ready-to-send data a stream gathers into one write (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// tonic's prost codec with [`BUFFER_SIZE`] buffers; named in `common/build.rs` as the codec
/// of every generated service and client.
pub struct SmallBufferCodec<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}
