//! The gzip level table (`__gzip SIZE`): for each level of `TABLE_LEVELS`, the
//! compression ratio of the bench payloads and the single-thread CPU time to compress one,
//! with zlib (flate2's `zlib` backend: libz-sys, the zlib grpc core links) and with
//! miniz_oxide (flate2's default backend, what tonic uses unless something enables zlib).

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use logsender::wire;

use crate::matrix::{Size, TABLE_LEVELS};
use crate::payloads::templates;
use crate::procfs::thread_cpu_secs;
use crate::roles::{print_result, scaled, watchdog};

/// Encoded bytes compressed per level and backend at scale 1.
const BYTES_PER_LEVEL: usize = 4 << 20;

/// gzip header and trailer around a raw deflate stream (miniz_oxide writes raw deflate).
const GZIP_FRAMING: usize = 18;

fn zlib_gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let out = Vec::with_capacity(bytes.len() / 2 + 64);
    let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn miniz_deflate(bytes: &[u8], level: u32) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(bytes, level as u8)
}

pub fn gzip_main(args: &[String]) {
    let size = Size::parse(args.first().map_or("", String::as_str));
    watchdog(Duration::from_secs(120));
    let encoded: Vec<Vec<u8>> = templates(size).iter().map(wire::encode).collect();
    let raw: usize = encoded.iter().map(Vec::len).sum();
    let avg = raw / encoded.len();
    let count = scaled(BYTES_PER_LEVEL / avg).max(encoded.len());
    let mut fields: Vec<(String, f64)> = vec![
        ("payloads".into(), count as f64),
        ("payload_bytes".into(), avg as f64),
    ];
    type Compressor = fn(&[u8], u32) -> Vec<u8>;
    let backends: [(&str, Compressor, usize); 2] = [
        ("zlib", zlib_gzip, 0),
        ("miniz", miniz_deflate, GZIP_FRAMING),
    ];
    for level in TABLE_LEVELS {
        for (backend, compress, framing) in backends {
            let packed: usize = encoded
                .iter()
                .map(|b| compress(b, level).len() + framing)
                .sum();
            let cpu0 = thread_cpu_secs();
            let mut out = 0usize;
            let mut fed = 0usize;
            for i in 0..count {
                let b = &encoded[i % encoded.len()];
                out += black_box(compress(black_box(b), level)).len();
                fed += b.len();
            }
            let cpu = thread_cpu_secs() - cpu0;
            black_box(out);
            let key = |what: &str| format!("l{level}_{backend}_{what}");
            fields.push((key("ratio"), raw as f64 / packed as f64));
            fields.push((key("us"), cpu * 1e6 / count as f64));
            fields.push((key("mb_per_cpu_s"), fed as f64 / cpu / 1e6));
        }
    }
    print_result(&fields);
}
