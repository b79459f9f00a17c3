//! Every tiny-a file (HF autobitlinear, HF bitlinear, GGUF I2_S, TQ2_0, TQ1_0) loads into
//! the same effective weights; sharded HF directories load; each writer's output loads
//! back to the same weights.

use onebit_engine::format::{self, gguf_write, hf};
use onebit_engine::model::{Model, TernaryTensor};
use onebit_engine::tokenizer::Tokenizer;
use onebit_kernels::embd::EmbdType;
use onebit_tests::fixture;
use std::path::{Path, PathBuf};

const VARIANTS: [&str; 5] = [
    "tiny-a/hf",
    "tiny-a/hf-bitlinear",
    "tiny-a/tiny-a.i2_s.gguf",
    "tiny-a/tiny-a.tq2_0.gguf",
    "tiny-a/tiny-a.tq1_0.gguf",
];

fn load(rel: &str) -> Option<(Model, Tokenizer)> {
    let p = fixture(rel)?;
    Some(format::load(&p).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onebit-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn embedding_values(m: &Model) -> Vec<f32> {
    let v = m.embed_tokens.view();
    let mut out = vec![0f32; v.rows * v.cols];
    for (r, row) in out.chunks_exact_mut(v.cols).enumerate() {
        v.row_to_f32(r, row);
    }
    out
}

fn assert_ternary_eq(what: &str, a: &TernaryTensor, b: &TernaryTensor, scale_rtol: f32) {
    assert_eq!((a.rows, a.cols), (b.rows, b.cols), "{what}: shape");
    let (va, vb) = (a.view(), b.view());
    for r in 0..a.rows {
        for c in 0..a.cols {
            assert_eq!(va.code(r, c), vb.code(r, c), "{what}: code at ({r}, {c})");
        }
    }
    let rel = (a.scale - b.scale).abs() / a.scale.abs().max(1e-30);
    assert!(
        rel <= scale_rtol,
        "{what}: scale {} vs {} (relative {rel})",
        a.scale,
        b.scale
    );
}

/// Asserts two models hold the same effective weights.
fn assert_same(name: &str, a: &Model, b: &Model, scale_rtol: f32) {
    let (ca, cb) = (&a.config, &b.config);
    assert_eq!(
        (
            ca.hidden_size,
            ca.intermediate_size,
            ca.n_layers,
            ca.n_heads,
            ca.n_kv_heads,
            ca.head_dim,
            ca.vocab_size,
            ca.max_context
        ),
        (
            cb.hidden_size,
            cb.intermediate_size,
            cb.n_layers,
            cb.n_heads,
            cb.n_kv_heads,
            cb.head_dim,
            cb.vocab_size,
            cb.max_context
        ),
        "{name}: config"
    );
    assert_eq!(ca.rope_theta, cb.rope_theta, "{name}: rope_theta");
    assert!(
        (ca.rms_norm_eps - cb.rms_norm_eps).abs() < 1e-9,
        "{name}: eps"
    );
    assert_eq!(ca.bos_token_id, cb.bos_token_id, "{name}: bos");
    assert_eq!(
        embedding_values(a),
        embedding_values(b),
        "{name}: embedding values"
    );
    assert_eq!(a.norm, b.norm, "{name}: final norm");
    for (i, (la, lb)) in a.layers.iter().zip(&b.layers).enumerate() {
        let w = |f: &str| format!("{name}: layer {i} {f}");
        assert_eq!(
            la.input_layernorm,
            lb.input_layernorm,
            "{}",
            w("input_layernorm")
        );
        assert_eq!(la.attn_sub_norm, lb.attn_sub_norm, "{}", w("attn_sub_norm"));
        assert_eq!(
            la.post_attention_layernorm,
            lb.post_attention_layernorm,
            "{}",
            w("post_attention_layernorm")
        );
        assert_eq!(la.ffn_sub_norm, lb.ffn_sub_norm, "{}", w("ffn_sub_norm"));
        for (f, ta, tb) in [
            ("q_proj", &la.q_proj, &lb.q_proj),
            ("k_proj", &la.k_proj, &lb.k_proj),
            ("v_proj", &la.v_proj, &lb.v_proj),
            ("o_proj", &la.o_proj, &lb.o_proj),
            ("gate_proj", &la.gate_proj, &lb.gate_proj),
            ("up_proj", &la.up_proj, &lb.up_proj),
            ("down_proj", &la.down_proj, &lb.down_proj),
        ] {
            assert_ternary_eq(&w(f), ta, tb, scale_rtol);
        }
    }
    assert_eq!(a.layers.len(), b.layers.len(), "{name}: layer count");
}

#[test]
fn all_tiny_a_variants_hold_the_same_weights() {
    let Some((base, tok)) = load(VARIANTS[0]) else {
        return;
    };
    assert_eq!(base.config.hidden_size, 256);
    assert_eq!(base.config.n_layers, 2);
    assert_eq!(base.config.vocab_size, 1024);
    assert_eq!(base.embed_tokens.kind, EmbdType::Bf16);
    assert!(
        base.embed_tokens.data.is_mapped(),
        "HF embedding should be a window of the mapping"
    );
    assert_eq!(tok.bos_id(), Some(0));
    assert!(
        tok.eos_ids().contains(&1) && tok.eos_ids().contains(&2),
        "eos {:?}",
        tok.eos_ids()
    );
    // The norms are not all ones, so a swapped norm would show.
    assert!(base.layers[0]
        .attn_sub_norm
        .iter()
        .flatten()
        .any(|&v| v != 1.0));
    for rel in &VARIANTS[1..] {
        let Some((m, t)) = load(rel) else { continue };
        assert_same(rel, &base, &m, 1e-3);
        assert_eq!(t.bos_id(), Some(0), "{rel}: bos");
        assert!(t.eos_ids().contains(&1), "{rel}: eos {:?}", t.eos_ids());
        assert_eq!(t.vocab_size(), tok.vocab_size(), "{rel}: vocab");
    }
}

#[test]
fn i2_s_projections_are_used_from_the_mapping() {
    let Some((m, _)) = load("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    assert_eq!(m.provenance.ternary_type, "I2_S");
    // By default the file is read into the weights' sealed memfd; its windows are used.
    assert!(
        m.layers[0].q_proj.data.is_sealed(),
        "I2_S with cols % 128 == 0 must not be repacked"
    );
    assert!(m.embed_tokens.data.is_sealed());
    assert_eq!(m.embed_tokens.kind, EmbdType::F16);
    // With --load mmap, the windows are the file's own mapping.
    let o = format::LoadOptions {
        method: format::LoadMethod::Mmap,
        ..Default::default()
    };
    let p = fixture("tiny-a/tiny-a.i2_s.gguf").unwrap();
    let (m, _) = format::load_with(&p, &o).unwrap();
    assert!(m.layers[0].q_proj.data.is_mapped());
    assert!(m.embed_tokens.data.is_mapped());
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn sharded_hf_directory_loads() {
    let Some((base, _)) = load("tiny-a/hf") else {
        return;
    };
    let src = fixture("tiny-a/hf").unwrap();
    let dir = tmp_dir("sharded");
    copy_dir(&src, &dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    // Split the fixture's own safetensors into three shards by tensor.
    let st = hf::safetensors::SafeTensors::open(&src.join("model.safetensors")).unwrap();
    let mut names: Vec<&str> = st.names().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (k, chunk) in names.chunks(names.len().div_ceil(3)).enumerate() {
        let file = format!("model-{:05}-of-00003.safetensors", k + 1);
        let tensors: Vec<_> = chunk
            .iter()
            .map(|n| {
                let e = st.get(n).unwrap();
                hf::safetensors::OutTensor {
                    name: n.to_string(),
                    dtype: e.dtype,
                    shape: e.shape.clone(),
                    data: st.data(e).unwrap().as_slice().to_vec().into(),
                }
            })
            .collect();
        hf::safetensors::write(&dir.join(&file), &tensors, &Default::default()).unwrap();
        for n in chunk {
            map.insert(n.to_string(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let (m, _) = format::load(&dir).unwrap();
    assert_same("sharded", &base, &m, 0.0);
    assert_eq!(
        m.provenance
            .metadata
            .iter()
            .find(|(k, _)| k == "shards")
            .map(|(_, v)| v.as_str()),
        Some("3")
    );
    // The writer's own sharding gives the same.
    let out = tmp_dir("sharded-writer");
    let (m0, tok) = load("tiny-a/hf").unwrap();
    let opts = hf::HfWriteOptions {
        max_shard_bytes: Some(200_000),
        ..Default::default()
    };
    hf::write_dir(&out, &m0, &tok, &opts).unwrap();
    assert!(out.join("model.safetensors.index.json").exists());
    let (m2, _) = format::load(&out).unwrap();
    assert_same("writer-sharded", &base, &m2, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn every_fixture_round_trips_through_every_writer() {
    let Some((base, _)) = load(VARIANTS[0]) else {
        return;
    };
    let dir = tmp_dir("roundtrip");
    for rel in VARIANTS {
        let Some((m, tok)) = load(rel) else { continue };
        for ty in [
            gguf_write::TernaryType::I2S,
            gguf_write::TernaryType::Tq2_0,
            gguf_write::TernaryType::Tq1_0,
        ] {
            let path = dir.join(format!("{}.{}.gguf", rel.replace('/', "_"), ty.name()));
            gguf_write::write_file(
                &path,
                &m,
                &tok,
                &gguf_write::GgufWriteOptions {
                    ternary: ty,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{rel} -> {}: {e}", ty.name()));
            let (back, tok2) =
                format::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // TQ types store the scale as f16; I2_S keeps f32.
            let rtol = if ty == gguf_write::TernaryType::I2S {
                0.0
            } else {
                1e-3
            };
            assert_same(&format!("{rel} -> {}", ty.name()), &m, &back, rtol);
            assert_same(&format!("{rel} -> {} vs hf", ty.name()), &base, &back, 2e-3);
            assert_eq!(tok2.vocab_size(), tok.vocab_size());
            assert_eq!(back.embed_tokens.kind, m.embed_tokens.kind);
        }
        for sd in [hf::ScaleDtype::Bf16, hf::ScaleDtype::F32] {
            let out = dir.join(format!("{}.hf-{sd:?}", rel.replace('/', "_")));
            std::fs::create_dir_all(&out).unwrap();
            hf::write_dir(
                &out,
                &m,
                &tok,
                &hf::HfWriteOptions {
                    scale_dtype: sd,
                    ..Default::default()
                },
            )
            .unwrap();
            let (back, _) = format::load(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
            let rtol = if sd == hf::ScaleDtype::F32 { 0.0 } else { 4e-3 };
            assert_same(&format!("{rel} -> hf {sd:?}"), &m, &back, rtol);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gguf_in_memory_loads_like_the_file() {
    let Some(p) = fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    let (a, _) = format::load(&p).unwrap();
    let bytes: &'static [u8] = Box::leak(std::fs::read(&p).unwrap().into_boxed_slice());
    let (b, _) =
        format::load_gguf_bytes("embedded", onebit_engine::model::Bytes::Static(bytes)).unwrap();
    assert_same("static bytes", &a, &b, 0.0);
    assert!(matches!(
        b.layers[0].q_proj.data,
        onebit_engine::model::Bytes::Static(_)
    ));
}

/// Re-writing a GGUF fixture in its own type reproduces its tensor bytes exactly and its
/// metadata keys (bitnet.cpp's and gguf-py's own output), so the tools can read ours.
#[test]
fn gguf_writer_reproduces_the_fixture_bytes() {
    use onebit_engine::format::gguf::GgufFile;
    let dir = tmp_dir("bytes");
    for (rel, ty) in [
        ("tiny-a/tiny-a.i2_s.gguf", gguf_write::TernaryType::I2S),
        ("tiny-a/tiny-a.tq2_0.gguf", gguf_write::TernaryType::Tq2_0),
        ("tiny-a/tiny-a.tq1_0.gguf", gguf_write::TernaryType::Tq1_0),
    ] {
        let Some(p) = fixture(rel) else { continue };
        let (m, tok) = format::load(&p).unwrap();
        let out = dir.join(format!("{}.gguf", ty.name()));
        let opts = gguf_write::GgufWriteOptions {
            ternary: ty,
            name: Some("onebit-fixture-tiny-a".into()),
        };
        gguf_write::write_file(&out, &m, &tok, &opts).unwrap();
        let (a, b) = (GgufFile::open(&p).unwrap(), GgufFile::open(&out).unwrap());
        for (k, v) in a.metadata() {
            assert_eq!(b.get(k), Some(v), "{rel}: metadata key {k}");
        }
        let names_a: Vec<&str> = a.tensors().iter().map(|t| t.name.as_str()).collect();
        let names_b: Vec<&str> = b.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names_a, names_b, "{rel}: tensor order");
        for ta in a.tensors() {
            let tb = b.tensor(&ta.name).unwrap();
            assert_eq!(
                (&ta.dims, ta.ggml_type),
                (&tb.dims, tb.ggml_type),
                "{rel}: {}",
                ta.name
            );
            let (da, db) = (a.tensor_data(ta).unwrap(), b.tensor_data(tb).unwrap());
            // bitnet.cpp leaves the 28 bytes after the I2_S scale uninitialized: compare
            // codes and scale only.
            let n = if ta.type_name() == "I2_S" {
                da.len() - 28
            } else {
                da.len()
            };
            assert!(
                da.as_slice()[..n] == db.as_slice()[..n],
                "{rel}: tensor {} bytes differ",
                ta.name
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bf16 master-weight layout (float projections, quantization_mode online) is
/// ternarized at load as BitNet does: codes = round(W / mean|W|) clamped, scale = mean|W|.
#[test]
fn float_projections_are_ternarized_with_absmean() {
    use hf::safetensors::{Dtype, OutTensor, SafeTensors};
    let Some(src) = fixture("tiny-a/hf") else {
        return;
    };
    let (base, _) = format::load(&src).unwrap();
    let dir = tmp_dir("float");
    copy_dir(&src, &dir);
    let st = SafeTensors::open(&src.join("model.safetensors")).unwrap();
    let mut out = Vec::new();
    let mut names: Vec<&str> = st.names().collect();
    names.sort();
    for n in names {
        if n.ends_with("_scale") {
            continue;
        }
        let e = st.get(n).unwrap();
        if e.dtype != Dtype::U8 {
            out.push(OutTensor {
                name: n.into(),
                dtype: e.dtype,
                shape: e.shape.clone(),
                data: st.data(e).unwrap().as_slice().to_vec().into(),
            });
            continue;
        }
        // Expand the packed codes to bf16 weights (code - 1) × scale.
        let (i, k) = (
            n.split('.').nth(2).unwrap().parse::<usize>().unwrap(),
            n.split('.').nth(4).unwrap(),
        );
        let l = &base.layers[i];
        let t = match k {
            "q_proj" => &l.q_proj,
            "k_proj" => &l.k_proj,
            "v_proj" => &l.v_proj,
            "o_proj" => &l.o_proj,
            "gate_proj" => &l.gate_proj,
            "up_proj" => &l.up_proj,
            _ => &l.down_proj,
        };
        let v = t.view();
        let mut data = Vec::with_capacity(t.rows * t.cols * 2);
        for r in 0..t.rows {
            for c in 0..t.cols {
                // The fixture's scales are bf16 values, so w is exact in bf16 (its top 16 bits).
                let w = (f32::from(v.code(r, c)) - 1.0) * t.scale;
                assert_eq!(w.to_bits() & 0xFFFF, 0);
                data.extend_from_slice(&((w.to_bits() >> 16) as u16).to_le_bytes());
            }
        }
        out.push(OutTensor {
            name: n.into(),
            dtype: Dtype::Bf16,
            shape: vec![t.rows, t.cols],
            data: data.into(),
        });
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    hf::safetensors::write(&dir.join("model.safetensors"), &out, &Default::default()).unwrap();
    let cfg = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["quantization_config"]["quantization_mode"] = "online".into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let (m, _) = format::load(&dir).unwrap();
    assert!(m.provenance.ternary_type.contains("float"));
    for (lb, lm) in base.layers.iter().zip(&m.layers) {
        for (tb, tm) in [
            (&lb.q_proj, &lm.q_proj),
            (&lb.k_proj, &lm.k_proj),
            (&lb.down_proj, &lm.down_proj),
        ] {
            let (vb, vm) = (tb.view(), tm.view());
            let mut nonzero = 0usize;
            for r in 0..tb.rows {
                for c in 0..tb.cols {
                    assert_eq!(vb.code(r, c), vm.code(r, c));
                    nonzero += usize::from(vb.code(r, c) != 1);
                }
            }
            // mean|W| = scale × (fraction of nonzero weights).
            let want = tb.scale * nonzero as f32 / (tb.rows * tb.cols) as f32;
            assert!(
                (tm.scale - want).abs() <= want * 1e-4,
                "scale {} vs {want}",
                tm.scale
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// GGUF v2 (same layout as v3 for little-endian files) loads.
#[test]
fn gguf_v2_loads() {
    let Some(p) = fixture("tiny-a/tiny-a.tq2_0.gguf") else {
        return;
    };
    let (a, _) = format::load(&p).unwrap();
    let mut d = std::fs::read(&p).unwrap();
    d[4..8].copy_from_slice(&2u32.to_le_bytes());
    let (b, _) = format::load_gguf_bytes("v2.gguf", onebit_engine::model::Bytes::owned(d)).unwrap();
    assert_same("v2", &a, &b, 0.0);
}

/// A model whose in-features are not multiples of 128 (so I2_S is not the row layout and
/// HF/kernel conversions take their generic paths) round-trips through HF and I2_S; the
/// TQ writers, which need multiples of 256, refuse it with a clear message.
#[test]
fn odd_shapes_round_trip() {
    use onebit_engine::model::{
        Activation, Block, Bytes, Config, Embedding, Family, Layer, Model, Provenance,
        TernaryTensor,
    };
    let Some(tp) = fixture("tiny-a/hf/tokenizer.json") else {
        return;
    };
    let tok = Tokenizer::from_file(&tp).unwrap();
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (h, f, heads, kv, hd, vocab) = (192usize, 320usize, 3usize, 1usize, 64usize, 1024usize);
    let mut tern = |rows: usize, cols: usize| {
        let codes: Vec<u8> = (0..rows * cols).map(|_| (next() % 3) as u8).collect();
        let scale = 0.25 + (next() % 64) as f32 / 256.0;
        TernaryTensor::new(
            rows,
            cols,
            scale,
            Bytes::owned(onebit_kernels::ternary::pack(rows, cols, |r, c| {
                codes[r * cols + c]
            })),
        )
    };
    let norm = |n: usize, k: usize| {
        (0..n)
            .map(|i| 1.0 + ((i * 7 + k) % 13) as f32 / 64.0)
            .collect::<Vec<f32>>()
    };
    let layers = (0..2)
        .map(|i| Layer {
            input_layernorm: norm(h, i),
            q_proj: tern(heads * hd, h),
            k_proj: tern(kv * hd, h),
            v_proj: tern(kv * hd, h),
            attn_sub_norm: Some(norm(heads * hd, i + 1)),
            o_proj: tern(h, heads * hd),
            post_attention_layernorm: norm(h, i + 2),
            gate_proj: tern(f, h),
            up_proj: tern(f, h),
            ffn_sub_norm: Some(norm(f, i + 3)),
            down_proj: tern(h, f),
        })
        .collect();
    let embd: Vec<u8> = (0..vocab * h)
        .flat_map(|i| (((i % 97) as f32 - 48.0) / 64.0).to_le_bytes())
        .collect();
    let config = Config {
        hidden_size: h,
        intermediate_size: f,
        n_layers: 2,
        n_heads: heads,
        n_kv_heads: kv,
        head_dim: hd,
        vocab_size: vocab,
        max_context: 256,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        bos_token_id: tok.bos_id(),
        eos_token_ids: tok.eos_ids(),
        block: Block::BitNet(Activation::Relu2),
        family: Family::BitNetB158,
        rope_scaling: None,
    };
    let model = Model {
        config,
        embed_tokens: Embedding {
            kind: EmbdType::F32,
            rows: vocab,
            cols: h,
            data: Bytes::owned(embd),
        },
        lm_head: None,
        layers,
        norm: norm(h, 9),
        medusa: None,
        provenance: Provenance::default(),
    };
    let dir = tmp_dir("odd");
    let g = dir.join("odd.gguf");
    gguf_write::write_file(&g, &model, &tok, &Default::default()).unwrap();
    let (back, _) = format::load(&g).unwrap();
    assert_same("odd i2_s", &model, &back, 0.0);
    assert!(
        !back.layers[0].q_proj.data.is_mapped(),
        "a 192-wide I2_S row is repacked"
    );
    let hfd = dir.join("hf");
    hf::write_dir(
        &hfd,
        &model,
        &tok,
        &hf::HfWriteOptions {
            scale_dtype: hf::ScaleDtype::F32,
            ..Default::default()
        },
    )
    .unwrap();
    let (back, _) = format::load(&hfd).unwrap();
    assert_same("odd hf", &model, &back, 0.0);
    let opts = gguf_write::GgufWriteOptions {
        ternary: gguf_write::TernaryType::Tq2_0,
        name: None,
    };
    let e = gguf_write::write_file(&dir.join("tq.gguf"), &model, &tok, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("multiple of 256") && e.contains("blk.0.attn_q.weight"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
