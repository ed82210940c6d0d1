//! The protobuf codec of `meshca.v1`: prost's, except that a request which cannot be decoded is
//! the caller's fault (`InvalidArgument`, as the README promises), not the server's (`Internal`,
//! prost's mapping).

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};

use crate::api::status::ApiError;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with decode errors reported as `InvalidArgument`.
#[derive(Debug, Clone, Default)]
pub(crate) struct StrictCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for StrictCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.0.decoder())
    }
}

/// [`ProstDecoder`] with decode errors reported as `InvalidArgument`.
#[derive(Debug, Clone, Default)]
pub(crate) struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            if s.code() == Code::Internal {
                Status::from(ApiError::Undecodable {
                    what: format!(
                        "the message cannot be decoded as {}: {}",
                        std::any::type_name::<U>()
                            .rsplit("::")
                            .next()
                            .unwrap_or("protobuf"),
                        ca_core::echo(s.message())
                    ),
                })
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
