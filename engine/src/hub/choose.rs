//! Which files of a repo to fetch and run: the best ternary GGUF, else a Hugging Face
//! model directory.

/// Ternary GGUF encodings onebit runs, best first, with why. A file is recognised by the
/// encoding's name in its file name, as bitnet.cpp and llama.cpp name their outputs.
const GGUF_RANKING: &[(&str, &str)] = &[
    (
        "i2_s",
        "I2_S is bitnet.cpp's own packing, used in place with no repacking",
    ),
    (
        "tq2_0",
        "TQ2_0 is llama.cpp's 2-bit ternary encoding, repacked at load",
    ),
    (
        "tq1_0",
        "TQ1_0 is llama.cpp's 1.6-bit ternary encoding, the smallest, repacked at load",
    ),
];

/// Files of a Hugging Face model directory worth fetching besides the weights.
const HF_DIR_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
];

/// What to fetch from a repo.
#[derive(Debug, PartialEq)]
pub enum Pick {
    /// One GGUF file, and why it was preferred.
    Gguf { file: String, why: String },
    /// A model directory: config, tokenizer and safetensors weights.
    HfDir { files: Vec<String> },
}

/// Chooses from the repo's `files`: the GGUF whose encoding ranks first in
/// `GGUF_RANKING` (ties: the shorter, then the first name), else the safetensors model
/// directory. The error says what the repo holds instead.
pub fn pick(files: &[String]) -> Result<Pick, String> {
    let ggufs: Vec<&String> = files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    let ranked = ggufs
        .iter()
        .filter_map(|f| {
            let base = f.rsplit('/').next().unwrap_or(f).to_ascii_lowercase();
            // Split GGUFs (`-00001-of-00003`) are several files; onebit loads one.
            if base.contains("-of-") {
                return None;
            }
            GGUF_RANKING
                .iter()
                .position(|(tag, _)| base.contains(tag))
                .map(|rank| (rank, f.len(), *f))
        })
        .min();
    if let Some((rank, _, file)) = ranked {
        let others = ggufs.len() - 1;
        let why = if others == 0 {
            format!("the only GGUF file; {}", GGUF_RANKING[rank].1)
        } else {
            format!(
                "preferred over {others} other GGUF file{}: {}",
                if others == 1 { "" } else { "s" },
                GGUF_RANKING[rank].1
            )
        };
        return Ok(Pick::Gguf {
            file: file.clone(),
            why,
        });
    }
    let has = |name: &str| files.iter().any(|f| f == name);
    let weights: Vec<&String> = files
        .iter()
        .filter(|f| !f.contains('/') && f.ends_with(".safetensors"))
        .collect();
    let tokenizer = has("tokenizer.json") || has("tokenizer.model");
    if has("config.json") && tokenizer && !weights.is_empty() {
        let mut want: Vec<String> = HF_DIR_FILES
            .iter()
            // SentencePiece's model only where there is no tokenizer.json to read.
            .filter(|f| has(f) && !(**f == "tokenizer.model" && has("tokenizer.json")))
            .map(|f| f.to_string())
            .collect();
        want.extend(weights.into_iter().cloned());
        return Ok(Pick::HfDir { files: want });
    }
    let tags: Vec<&str> = GGUF_RANKING.iter().map(|(t, _)| *t).collect();
    Err(if ggufs.is_empty() {
        "no GGUF file, and no config.json + tokenizer.json (or tokenizer.model) + *.safetensors model directory".into()
    } else {
        format!(
            "its GGUF files ({}) are not ternary ({}) or are split into parts; name one as REPO:FILE to try it anyway",
            ggufs.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            tags.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefers_i2_s_then_tq2_0_then_tq1_0() {
        let files = names(&[
            "README.md",
            "m-TQ1_0.gguf",
            "m-tq2_0.gguf",
            "ggml-model-i2_s.gguf",
            "m-f16.gguf",
        ]);
        match pick(&files).unwrap() {
            Pick::Gguf { file, why } => {
                assert_eq!(file, "ggml-model-i2_s.gguf");
                assert!(why.contains("3 other") && why.contains("I2_S"), "{why}");
            }
            p => panic!("{p:?}"),
        }
        let files = names(&["m-TQ1_0.gguf", "m-TQ2_0.gguf", "m-TQ2_0-extra.gguf"]);
        assert!(matches!(pick(&files).unwrap(), Pick::Gguf { file, .. } if file == "m-TQ2_0.gguf"));
        let files = names(&["m-tq1_0.gguf"]);
        assert!(
            matches!(pick(&files).unwrap(), Pick::Gguf { why, .. } if why.starts_with("the only"))
        );
    }

    #[test]
    fn falls_back_to_a_model_directory() {
        let files = names(&[
            ".gitattributes",
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors",
            "m-f16.gguf",
        ]);
        assert_eq!(
            pick(&files).unwrap(),
            Pick::HfDir {
                files: names(&[
                    "config.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "model.safetensors"
                ])
            }
        );
    }

    #[test]
    fn a_sentencepiece_folder_brings_its_tokenizer_model_only_when_it_lacks_tokenizer_json() {
        let files = names(&["config.json", "tokenizer.model", "model.safetensors"]);
        assert_eq!(
            pick(&files).unwrap(),
            Pick::HfDir {
                files: names(&["config.json", "tokenizer.model", "model.safetensors"])
            }
        );
        let files = names(&[
            "config.json",
            "tokenizer.json",
            "tokenizer.model",
            "model.safetensors",
        ]);
        assert_eq!(
            pick(&files).unwrap(),
            Pick::HfDir {
                files: names(&["config.json", "tokenizer.json", "model.safetensors"])
            }
        );
    }

    #[test]
    fn says_what_the_repo_holds_instead() {
        let e = pick(&names(&["m-f16.gguf", "m-Q4_K_M.gguf"])).unwrap_err();
        assert!(e.contains("m-f16.gguf") && e.contains("REPO:FILE"), "{e}");
        let e = pick(&names(&["README.md"])).unwrap_err();
        assert!(e.contains("no GGUF"), "{e}");
        let e = pick(&names(&[
            "m-i2_s-00001-of-00002.gguf",
            "m-i2_s-00002-of-00002.gguf",
        ]))
        .unwrap_err();
        assert!(e.contains("split"), "{e}");
    }
}
