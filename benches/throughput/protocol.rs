//! The method table: `/proto.LogService/SubmitStream` as raw bytes, for the raw grpcio
//! clients (pre-encoded or just-encoded slices) and for the sink (which never decodes).

use grpcio::{GrpcSlice, Marshaller, MessageReader, Method, MethodType};

pub const PATH: &str = "/proto.LogService/SubmitStream";

/// The request side of `SubmitStream` as pre-encoded bytes, driven as a duplex call on
/// the client (the GoSight ending, OK with no message, would make grpcio's
/// client-streaming receiver panic). Same bytes on the wire as a client stream.
pub const RAW_METHOD: Method<GrpcSlice, Vec<u8>> = Method {
    ty: MethodType::Duplex,
    name: PATH,
    req_mar: Marshaller {
        ser: ser_slice,
        de: de_slice,
    },
    resp_mar: Marshaller {
        ser: ser_vec,
        de: de_vec,
    },
};

fn ser_slice(msg: &GrpcSlice, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = msg.clone();
    Ok(())
}

fn de_slice(reader: MessageReader) -> grpcio::Result<GrpcSlice> {
    de_vec(reader).map(GrpcSlice::from)
}

pub fn ser_vec(msg: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(msg.as_slice());
    Ok(())
}

pub fn de_vec(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::with_capacity(reader.len());
    reader
        .read_to_end(&mut v)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(v)
}

/// The sink never decodes: a request is just its length.
pub const SINK_METHOD: Method<usize, Vec<u8>> = Method {
    ty: MethodType::ClientStreaming,
    name: PATH,
    req_mar: Marshaller {
        ser: ser_len,
        de: de_len,
    },
    resp_mar: Marshaller {
        ser: ser_vec,
        de: de_vec,
    },
};

fn ser_len(_: &usize, _: &mut GrpcSlice) -> grpcio::Result<()> {
    Ok(()) // requests are never serialized by the server
}

fn de_len(reader: MessageReader) -> grpcio::Result<usize> {
    Ok(reader.len())
}
