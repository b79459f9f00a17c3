//! Damaged model files: truncated copies at many lengths and bit-flipped copies of every
//! tiny-a file never panic and give errors naming the file; specific damage (wrong magic,
//! data out of bounds, wrong shape, unknown type, unknown arch, bad packed codes) gives
//! the matching message. The fuzz targets' entry points run on random bytes here too.

use onebit_engine::format::{self, fuzz, gguf::GgufFile, gguf::Value, gguf_write};
use onebit_engine::Error;
use onebit_tests::fixture;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const GGUFS: [&str; 3] = [
    "tiny-a/tiny-a.i2_s.gguf",
    "tiny-a/tiny-a.tq2_0.gguf",
    "tiny-a/tiny-a.tq1_0.gguf",
];

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onebit-corrupt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Loads `path`, turning a panic into a test failure that names the case.
fn load_no_panic(path: &Path, case: &str) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| format::load(path))) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("loader panicked on {case}"),
    }
}

fn load_bytes_no_panic(name: &str, data: Vec<u8>, case: &str) -> Result<(), String> {
    let bytes = onebit_engine::model::Bytes::owned(data);
    match catch_unwind(AssertUnwindSafe(|| format::load_gguf_bytes(name, bytes))) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("loader panicked on {case}"),
    }
}

/// Lengths to cut at: every header byte region densely, the data sparsely, and the edges.
fn cut_points(len: usize, rng: &mut Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..64)
        .chain((64..4096).step_by(37))
        .filter(|&n| n < len)
        .collect();
    v.extend((0..120).map(|_| rng.below(len)));
    v.extend([len - 1, len - 2, len - 33, len / 2]);
    v
}

#[test]
fn truncated_gguf_files_fail_cleanly() {
    for (k, rel) in GGUFS.iter().enumerate() {
        let Some(p) = fixture(rel) else { continue };
        let data = std::fs::read(&p).unwrap();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ k as u64);
        let name = format!("{rel}.truncated");
        for n in cut_points(data.len(), &mut rng) {
            let r = load_bytes_no_panic(&name, data[..n].to_vec(), &format!("{rel} cut at {n}"));
            let e = r.expect_err(&format!("{rel} cut at {n} bytes loaded"));
            assert!(
                e.contains(&name),
                "{rel} cut at {n}: message does not name the file: {e}"
            );
        }
    }
}

#[test]
fn truncated_file_on_disk_names_the_path() {
    let Some(p) = fixture(GGUFS[0]) else { return };
    let dir = tmp_dir("trunc-disk");
    let data = std::fs::read(&p).unwrap();
    let out = dir.join("cut.gguf");
    std::fs::write(&out, &data[..data.len() - 1000]).unwrap();
    let e = format::load(&out).unwrap_err().to_string();
    assert!(
        e.contains(&out.display().to_string()) && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&out, b"GGU").unwrap();
    let e = format::load(&out).unwrap_err().to_string();
    assert!(e.contains("cut.gguf"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bit_flipped_gguf_files_never_panic() {
    for (k, rel) in GGUFS.iter().enumerate() {
        let Some(p) = fixture(rel) else { continue };
        let data = std::fs::read(&p).unwrap();
        let header = GgufFile::open(&p).unwrap().data_offset as usize;
        let name = format!("{rel}.flipped");
        let (mut errors, mut trials) = (0, 0);
        for seed in 0..300u64 {
            let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (k as u64 + 1));
            let mut d = data.clone();
            for _ in 0..1 + rng.below(4) {
                // Mostly the header, where a flip changes structure; sometimes the data.
                let at = if rng.below(4) == 0 {
                    rng.below(d.len())
                } else {
                    rng.below(header)
                };
                d[at] ^= 1 << rng.below(8);
            }
            trials += 1;
            if let Err(e) = load_bytes_no_panic(&name, d, &format!("{rel} seed {seed}")) {
                errors += 1;
                assert!(
                    e.contains(&name),
                    "seed {seed}: message does not name the file: {e}"
                );
            }
        }
        // Flips inside weights or inside token strings can leave a loadable file; most header
        // flips cannot.
        assert!(
            errors * 4 >= trials,
            "{rel}: only {errors} of {trials} flipped copies were rejected"
        );
    }
}

fn copy_hf(dir: &Path) -> Option<()> {
    let src = fixture("tiny-a/hf")?;
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    Some(())
}

#[test]
fn damaged_hf_directories_fail_cleanly() {
    let dir = tmp_dir("hf");
    if copy_hf(&dir).is_none() {
        return;
    }
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "generation_config.json",
    ] {
        let path = dir.join(file);
        let orig = std::fs::read(&path).unwrap();
        let mut rng = Rng(0xC0FFEE ^ orig.len() as u64);
        let mut cuts = cut_points(orig.len(), &mut rng);
        cuts.truncate(if file == "model.safetensors" {
            400
        } else {
            120
        });
        for n in cuts {
            std::fs::write(&path, &orig[..n]).unwrap();
            let e = load_no_panic(&dir, &format!("{file} cut at {n}"))
                .expect_err(&format!("{file} cut at {n} loaded"));
            assert!(
                e.contains(file),
                "{file} cut at {n}: message does not name the file: {e}"
            );
        }
        for seed in 0..150u64 {
            let mut rng = Rng(seed * 7919 + 1);
            let mut d = orig.clone();
            let limit = if file == "model.safetensors" {
                8 + 4096.min(d.len() - 8)
            } else {
                d.len()
            };
            let at = rng.below(limit);
            d[at] ^= 1 << rng.below(8);
            std::fs::write(&path, &d).unwrap();
            if let Err(e) = load_no_panic(&dir, &format!("{file} seed {seed}")) {
                assert!(
                    e.contains(file) || e.contains(&dir.display().to_string()),
                    "{file} seed {seed}: {e}"
                );
            }
        }
        std::fs::write(&path, &orig).unwrap();
    }
    format::load(&dir).expect("restored copy loads");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Byte offset of tensor `name`'s info record fields after its name: (dims, type, offset).
fn tensor_info_at(data: &[u8], g: &GgufFile, name: &str) -> (usize, usize, usize) {
    let t = g.tensor(name).unwrap();
    let at = t.info_offset as usize + 8 + name.len();
    assert_eq!(&data[at - name.len()..at], name.as_bytes());
    let nd = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let dims = at + 4;
    let ty = dims + 8 * nd;
    (dims, ty, ty + 4)
}

fn i2s() -> Option<(PathBuf, Vec<u8>, GgufFile)> {
    let p = fixture(GGUFS[0])?;
    let data = std::fs::read(&p).unwrap();
    let g = GgufFile::open(&p).unwrap();
    Some((p, data, g))
}

fn expect_err(name: &str, data: Vec<u8>, needles: &[&str]) -> Error {
    let bytes = onebit_engine::model::Bytes::owned(data);
    let e = format::load_gguf_bytes(name, bytes).expect_err("damaged file loaded");
    let s = e.to_string();
    for n in needles {
        assert!(s.contains(n), "message {s:?} lacks {n:?}");
    }
    e
}

#[test]
fn wrong_magic() {
    let Some((_, mut data, _)) = i2s() else {
        return;
    };
    data[0] = b'X';
    let e = expect_err(
        "bad-magic.gguf",
        data,
        &["bad-magic.gguf", "magic", "offset 0"],
    );
    assert!(matches!(e, Error::Corrupt { offset: 0, .. }));
    // Through `load`, a non-GGUF file is refused before parsing.
    let dir = tmp_dir("magic");
    let p = dir.join("model.bin");
    std::fs::write(&p, b"PK\x03\x04 not a model").unwrap();
    let e = format::load(&p).unwrap_err().to_string();
    assert!(e.contains("model.bin") && e.contains("GGUF"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tensor_out_of_bounds() {
    let Some((_, mut data, g)) = i2s() else {
        return;
    };
    let (_, _, off) = tensor_info_at(&data, &g, "blk.1.ffn_up.weight");
    data[off..off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect_err(
        "oob.gguf",
        data,
        &["oob.gguf", "blk.1.ffn_up.weight", "beyond the end"],
    );
}

#[test]
fn overlapping_and_misaligned_tensors() {
    let Some((_, data, g)) = i2s() else { return };
    let (_, _, off) = tensor_info_at(&data, &g, "blk.0.attn_v.weight");
    let k = g.tensor("blk.0.attn_k.weight").unwrap().rel_offset;
    let mut d = data.clone();
    d[off..off + 8].copy_from_slice(&k.to_le_bytes());
    expect_err("overlap.gguf", d, &["overlap.gguf", "overlaps"]);
    let mut d = data;
    d[off..off + 8].copy_from_slice(&(k + 4).to_le_bytes());
    expect_err(
        "misaligned.gguf",
        d,
        &["misaligned.gguf", "blk.0.attn_v.weight", "not aligned"],
    );
}

#[test]
fn wrong_shape_vs_config() {
    let Some((_, mut data, g)) = i2s() else {
        return;
    };
    // attn_k is [256, 128]; swapping to [128, 256] keeps its size but not the config's shape.
    let (dims, _, _) = tensor_info_at(&data, &g, "blk.0.attn_k.weight");
    data[dims..dims + 8].copy_from_slice(&128u64.to_le_bytes());
    data[dims + 8..dims + 16].copy_from_slice(&256u64.to_le_bytes());
    let e = expect_err(
        "shape.gguf",
        data,
        &[
            "shape.gguf",
            "blk.0.attn_k.weight",
            "does not match the configuration",
        ],
    );
    assert!(matches!(e, Error::Tensor { .. }));
}

#[test]
fn unknown_quant_type() {
    let Some((_, mut data, g)) = i2s() else {
        return;
    };
    let (_, ty, _) = tensor_info_at(&data, &g, "blk.0.ffn_gate.weight");
    data[ty..ty + 4].copy_from_slice(&99u32.to_le_bytes());
    expect_err(
        "type.gguf",
        data,
        &[
            "type.gguf",
            "blk.0.ffn_gate.weight",
            "unknown ggml tensor type id 99",
        ],
    );
}

/// Re-writes a GGUF with one metadata value replaced, keeping every tensor.
fn rewrite_kv(g: &GgufFile, key: &str, value: Value) -> Vec<u8> {
    let kv: Vec<(String, Value)> = g
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), if k == key { value.clone() } else { v.clone() }))
        .collect();
    let tensors: Vec<gguf_write::OutTensor<'_>> = g
        .tensors()
        .iter()
        .map(|t| {
            let d = g.tensor_data(t).unwrap();
            gguf_write::OutTensor::from_bytes(
                t.name.clone(),
                t.dims.clone(),
                t.ggml_type,
                d.as_slice().to_vec().into(),
            )
        })
        .collect();
    let mut out = Vec::new();
    gguf_write::write_gguf(&mut out, &kv, &tensors).unwrap();
    out
}

#[test]
fn unknown_arch_and_bad_hyperparameters() {
    let Some((_, _, g)) = i2s() else { return };
    let d = rewrite_kv(&g, "general.architecture", Value::String("gpt2".into()));
    let e = expect_err("arch.gguf", d, &["arch.gguf", "\"gpt2\"", "bitnet-b1.58"]);
    assert!(matches!(e, Error::Unsupported { .. }));
    let d = rewrite_kv(&g, "bitnet-b1.58.feed_forward_length", Value::U32(512));
    expect_err("ffn.gguf", d, &["ffn.gguf", "blk.0.ffn_gate.weight"]);
    let d = rewrite_kv(&g, "bitnet-b1.58.attention.head_count_kv", Value::U32(3));
    expect_err("kv.gguf", d, &["kv.gguf", "num_key_value_heads"]);
    let d = rewrite_kv(&g, "tokenizer.ggml.model", Value::String("t5".into()));
    expect_err("t5.gguf", d, &["t5.gguf", "tokenizer.ggml.model", "\"t5\""]);
    // A SentencePiece vocabulary without its scores cannot order its merges.
    let d = rewrite_kv(&g, "tokenizer.ggml.model", Value::String("llama".into()));
    expect_err("spm.gguf", d, &["spm.gguf", "tokenizer.ggml.scores"]);
    // The unmodified rewrite loads: the damage above is what the errors are about.
    let d = rewrite_kv(&g, "general.name", Value::String("same".into()));
    format::load_gguf_bytes("same.gguf", onebit_engine::model::Bytes::owned(d)).unwrap();
}

/// An `output.weight` that copies `token_embd` is the tied head and loads; any other
/// head is untied and refused.
#[test]
fn a_copied_output_head_is_tied_and_a_different_one_is_the_head() {
    let Some((_, _, g)) = i2s() else { return };
    let with_head = |flip: bool| {
        let mut tensors: Vec<gguf_write::OutTensor<'_>> = g
            .tensors()
            .iter()
            .map(|t| {
                let d = g.tensor_data(t).unwrap();
                gguf_write::OutTensor::from_bytes(
                    t.name.clone(),
                    t.dims.clone(),
                    t.ggml_type,
                    d.as_slice().to_vec().into(),
                )
            })
            .collect();
        let e = g.tensor("token_embd.weight").unwrap();
        let mut head = g.tensor_data(e).unwrap().as_slice().to_vec();
        if flip {
            head[100] ^= 0x40;
        }
        tensors.push(gguf_write::OutTensor::from_bytes(
            "output.weight",
            e.dims.clone(),
            e.ggml_type,
            head.into(),
        ));
        let mut out = Vec::new();
        gguf_write::write_gguf(&mut out, g.metadata(), &tensors).unwrap();
        out
    };
    let (tied, _) = format::load_gguf_bytes(
        "tied.gguf",
        onebit_engine::model::Bytes::owned(with_head(false)),
    )
    .unwrap();
    assert!(
        tied.lm_head.is_none(),
        "a byte-for-byte copy is the tied head"
    );
    let (untied, _) = format::load_gguf_bytes(
        "head.gguf",
        onebit_engine::model::Bytes::owned(with_head(true)),
    )
    .unwrap();
    let head = untied
        .lm_head
        .as_ref()
        .expect("a different output.weight is the head");
    assert_ne!(head.data.as_slice(), untied.embed_tokens.data.as_slice());
    assert!(std::ptr::eq(untied.head(), head));
}

#[test]
fn invalid_ternary_codes_are_refused() {
    let Some((_, mut data, g)) = i2s() else {
        return;
    };
    let t = g.tensor("blk.1.attn_q.weight").unwrap();
    data[t.offset as usize + 5] = 0xFF;
    expect_err(
        "code3.gguf",
        data,
        &["code3.gguf", "blk.1.attn_q.weight", "code 3"],
    );

    let dir = tmp_dir("hf-code3");
    if copy_hf(&dir).is_none() {
        return;
    }
    let p = dir.join("model.safetensors");
    let st = format::hf::safetensors::SafeTensors::open(&p).unwrap();
    let e = st.get("model.layers.0.mlp.up_proj.weight").unwrap().clone();
    drop(st);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[e.offset + 3] = 0xFF;
    std::fs::write(&p, &bytes).unwrap();
    let msg = format::load(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("model.layers.0.mlp.up_proj.weight") && msg.contains("code 3"),
        "{msg}"
    );
    // A config that disagrees with the tensors names the tensor.
    copy_hf(&dir);
    let cfg = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["intermediate_size"] = 512.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let msg = format::load(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("gate_proj") && msg.contains("does not match"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fuzz_entry_points_survive_random_and_mutated_bytes() {
    let mut rng = Rng(42);
    let mut seeds: Vec<Vec<u8>> = vec![Vec::new(), b"GGUF".to_vec(), b"GGUF\x03\0\0\0".to_vec()];
    for rel in GGUFS {
        if let Some(p) = fixture(rel) {
            let d = std::fs::read(p).unwrap();
            let g = GgufFile::parse("x", onebit_engine::model::Bytes::owned(d.clone())).unwrap();
            seeds.push(d[..g.data_offset as usize].to_vec());
        }
    }
    for _ in 0..300 {
        let n = rng.below(512);
        let mut v: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        if rng.below(2) == 0 && v.len() >= 8 {
            v[..4].copy_from_slice(b"GGUF");
            v[4..8].copy_from_slice(&3u32.to_le_bytes());
        }
        fuzz::gguf(&v);
        fuzz::safetensors(&v);
        fuzz::hf_config(&v);
        fuzz::tokenizer_json(&v);
    }
    for s in &seeds {
        for _ in 0..40 {
            let mut v = s.clone();
            if !v.is_empty() {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(v.len());
                    v[at] = rng.next() as u8;
                }
            }
            fuzz::gguf(&v);
        }
    }
    if let Some(p) = fixture("tiny-a/hf/model.safetensors") {
        let d = std::fs::read(p).unwrap();
        assert!(fuzz::safetensors(&d));
        let hlen = 8 + u64::from_le_bytes(d[..8].try_into().unwrap()) as usize;
        for _ in 0..300 {
            let mut v = d[..hlen + 64].to_vec();
            let at = rng.below(hlen);
            v[at] = rng.next() as u8;
            fuzz::safetensors(&v);
        }
    }
    for rel in ["tiny-a/hf/config.json", "tiny-a/hf/tokenizer.json"] {
        let Some(p) = fixture(rel) else { continue };
        let d = std::fs::read(p).unwrap();
        let f = if rel.ends_with("config.json") {
            fuzz::hf_config
        } else {
            fuzz::tokenizer_json
        };
        assert!(f(&d), "{rel} parses");
        for _ in 0..100 {
            let mut v = d.clone();
            let at = rng.below(v.len());
            v[at] = rng.next() as u8;
            f(&v);
        }
    }
}
