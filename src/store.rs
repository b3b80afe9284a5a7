//! The result store: every analysis camview made, in an embedded SQLite database, so a folder
//! analysed once (by `eval` or the browser) opens with its results in place. A row is keyed
//! by the image file's identity (path, size, modification time), the weights' identity (the
//! SHA-256 of the weights file, computed once per file version), the resize mode and the
//! method of the CAM family that made its maps and boxes. Beside each analysis, the
//! faithfulness scores of its maps (`cam`/`eval --faithfulness`), keyed as the analysis is
//! plus the map's class and the metrics' settings.
//!
//! Durability: WAL mode and one transaction per result, so a process killed at any moment
//! loses at most the images in flight and never the store; two camview processes can share
//! it (SQLite's locks, with a generous busy timeout). A store that cannot be read is moved
//! aside and a new one made; a place where none can be written means running without one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use half::f16;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::analysis::{ImageKey, Record, TruthRecord};
use crate::model::cam::{BBox, CamGrid};
use crate::model::cam_methods::CamMethod;
use crate::model::faithfulness::Scores;
use crate::model::preprocess::Region;
use crate::model::{Analysis, Prediction, ResizeMode, labels};

/// The default store: `results.sqlite` beside the default weights (in this checkout's
/// `models/`, else the user's cache folder).
pub fn default_path() -> PathBuf {
    crate::model::weights::default_path().with_file_name("results.sqlite")
}

/// Bumped when the record layout changes; older rows are then ignored, not misread.
const RECORD_VERSION: u8 = 1;

/// Bumped when the stored faithfulness scores change; older rows are then ignored.
const SCORES_VERSION: u8 = 1;

/// The tables' layout, in SQLite's `user_version`: a store of an older layout is migrated
/// (see [`migrate`]; layout 2 keyed results by method, 3 added `faithfulness`, which any
/// older store simply gains), one of another layout set aside.
const SCHEMA_VERSION: i64 = 3;

/// The results table of layout 2: keyed by the method too. Layout 1 had no `method` column
/// (every row was CAM's) and its key without it, which SQLite cannot alter in place.
const RESULTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS results (
                 path TEXT NOT NULL, size INTEGER NOT NULL, modified_ns INTEGER NOT NULL,
                 weights TEXT NOT NULL, resize TEXT NOT NULL,
                 method TEXT NOT NULL,
                 truth INTEGER,
                 record BLOB NOT NULL,
                 UNIQUE (path, size, modified_ns, weights, resize, method))";

/// A row's file key: the file's absolute path (so any working folder finds it), size and
/// modification time.
struct FileRow {
    path: String,
    size: i64,
    modified_ns: i64,
}

impl FileRow {
    /// The row key of `key`; `None` when the file could not be read.
    fn of(key: &ImageKey) -> Option<Self> {
        let modified = key.modified?;
        let real = std::fs::canonicalize(&key.path).unwrap_or_else(|_| key.path.clone());
        Some(Self {
            path: real.to_string_lossy().into_owned(),
            size: key.size as i64,
            modified_ns: nanos(Some(modified)),
        })
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {}", .path.display())]
    Weights {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the result store failed")]
    Sql(#[from] rusqlite::Error),
}

fn nanos(time: Option<SystemTime>) -> i64 {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Opens the store at `path` for use: a store that cannot be read is moved aside and a new
/// one made; where none can be written, `None`. The message says what happened, for the user.
pub fn open_or_recover(path: &Path) -> (Option<Store>, Option<String>) {
    match Store::open(path) {
        Ok(store) => (Some(store), None),
        Err(OpenError::Unusable(why)) => {
            let aside = aside_name(path);
            let moved = std::fs::rename(path, &aside);
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(with_suffix(path, suffix));
            }
            if let Err(e) = moved {
                return (
                    None,
                    Some(format!(
                        "the result store {} is unreadable ({why}) and cannot be moved aside ({e}); results are not kept",
                        path.display()
                    )),
                );
            }
            let note = format!(
                "the result store {} was unreadable ({why}); moved it to {} and started a new one",
                path.display(),
                aside.display()
            );
            match Store::open(path) {
                Ok(store) => (Some(store), Some(note)),
                Err(e) => (None, Some(format!("{note}, which failed too: {e}"))),
            }
        }
        Err(OpenError::Unwritable(why)) => (
            None,
            Some(format!(
                "cannot write the result store {} ({why}); results are not kept",
                path.display()
            )),
        ),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn aside_name(path: &Path) -> PathBuf {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    with_suffix(path, &format!(".corrupt-{stamp}"))
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is there but is no usable store: it may be moved aside.
    #[error("{0}")]
    Unusable(String),
    /// The place cannot be written.
    #[error("{0}")]
    Unwritable(String),
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| OpenError::Unwritable(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(classify)?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(classify)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(classify)?;
        if check != "ok" {
            return Err(OpenError::Unusable(format!("integrity check: {check}")));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(classify)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(classify)?;
        let layout: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(classify)?;
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(classify)?;
        let fresh = layout == 0 && tables == 0;
        if !fresh && !(1..=SCHEMA_VERSION).contains(&layout) {
            return Err(OpenError::Unusable(format!(
                "another layout ({layout}; this camview writes {SCHEMA_VERSION})"
            )));
        }
        if layout == 1 {
            migrate(&conn).map_err(classify)?;
        }
        // Every other table is made if missing: a layout-2 store (before `faithfulness`)
        // gains it and keeps its rows.
        // Results are rows of a rowid table with the key in an index of its own: a
        // WITHOUT ROWID table keeps whole rows in its index pages, where a row over about
        // 1 KB spills into an overflow page of its own (4.7 KB an image instead of 1.9).
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS weights (
                 path TEXT NOT NULL, size INTEGER NOT NULL, modified_ns INTEGER NOT NULL,
                 sha256 TEXT NOT NULL,
                 PRIMARY KEY (path, size, modified_ns));
             {RESULTS_TABLE};
             CREATE TABLE IF NOT EXISTS faithfulness (
                 path TEXT NOT NULL, size INTEGER NOT NULL, modified_ns INTEGER NOT NULL,
                 weights TEXT NOT NULL, resize TEXT NOT NULL,
                 method TEXT NOT NULL, class INTEGER NOT NULL, settings TEXT NOT NULL,
                 scores BLOB NOT NULL,
                 UNIQUE (path, size, modified_ns, weights, resize, method, class, settings));
             PRAGMA user_version = {SCHEMA_VERSION};
             COMMIT;"
        ))
        .map_err(classify)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SHA-256 of the weights file at `path`, computed once per version of the file.
    pub fn weights_id(&self, path: &Path) -> Result<String, StoreError> {
        let unreadable = |source| StoreError::Weights {
            path: path.to_path_buf(),
            source,
        };
        std::fs::metadata(path).map_err(unreadable)?;
        let file = FileRow::of(&ImageKey::of(path))
            .ok_or_else(|| unreadable(std::io::Error::other("its modification time is unknown")))?;
        let known: Option<String> = self
            .conn
            .query_row(
                "SELECT sha256 FROM weights WHERE path = ?1 AND size = ?2 AND modified_ns = ?3",
                params![file.path, file.size, file.modified_ns],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(sha) = known {
            return Ok(sha);
        }
        let sha = crate::model::fetch::sha256_file(path).map_err(unreadable)?;
        self.conn.execute(
            "INSERT OR REPLACE INTO weights VALUES (?1, ?2, ?3, ?4)",
            params![file.path, file.size, file.modified_ns, sha],
        )?;
        Ok(sha)
    }

    /// The stored record of `key` for these weights, mode and method, if any. A row of
    /// another record layout, or one that cannot be decoded, counts as missing.
    pub fn get(
        &self,
        key: &ImageKey,
        weights: &str,
        resize: ResizeMode,
        method: CamMethod,
    ) -> Result<Option<Record>, StoreError> {
        let Some(file) = FileRow::of(key) else {
            return Ok(None);
        };
        let mut query = self.conn.prepare_cached(
            "SELECT record FROM results
             WHERE path = ?1 AND size = ?2 AND modified_ns = ?3 AND weights = ?4 AND resize = ?5
                   AND method = ?6",
        )?;
        let blob: Option<Vec<u8>> = query
            .query_row(
                params![
                    file.path,
                    file.size,
                    file.modified_ns,
                    weights,
                    mode_name(resize),
                    method.name()
                ],
                |r| r.get(0),
            )
            .optional()?;
        Ok(blob.and_then(|b| decode(&b)))
    }

    /// Stores `record`, replacing an older one of the same key, in one transaction. A file
    /// that could not be read has no key: nothing is stored.
    pub fn put(
        &self,
        key: &ImageKey,
        weights: &str,
        resize: ResizeMode,
        method: CamMethod,
        record: &Record,
    ) -> Result<(), StoreError> {
        let Some(file) = FileRow::of(key) else {
            return Ok(());
        };
        let mut insert = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO results
             (path, size, modified_ns, weights, resize, method, truth, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        insert.execute(params![
            file.path,
            file.size,
            file.modified_ns,
            weights,
            mode_name(resize),
            method.name(),
            record.truth.as_ref().map(|t| t.class as i64),
            encode(record),
        ])?;
        Ok(())
    }

    /// The stored faithfulness scores of `key`'s `method` map of `class` for these weights,
    /// mode and metric settings ([`crate::model::faithfulness::Settings::key`]), if any.
    pub fn get_faithfulness(
        &self,
        key: &ImageKey,
        weights: &str,
        resize: ResizeMode,
        map: MapKey,
    ) -> Result<Option<Scores>, StoreError> {
        let Some(file) = FileRow::of(key) else {
            return Ok(None);
        };
        let mut query = self.conn.prepare_cached(
            "SELECT scores FROM faithfulness
             WHERE path = ?1 AND size = ?2 AND modified_ns = ?3 AND weights = ?4 AND resize = ?5
               AND method = ?6 AND class = ?7 AND settings = ?8",
        )?;
        let blob: Option<Vec<u8>> = query
            .query_row(
                params![
                    file.path,
                    file.size,
                    file.modified_ns,
                    weights,
                    mode_name(resize),
                    map.method.name(),
                    map.class as i64,
                    map.settings
                ],
                |r| r.get(0),
            )
            .optional()?;
        Ok(blob.and_then(|b| decode_scores(&b)))
    }

    /// Stores faithfulness scores, replacing older ones of the same key, in one transaction.
    pub fn put_faithfulness(
        &self,
        key: &ImageKey,
        weights: &str,
        resize: ResizeMode,
        map: MapKey,
        scores: &Scores,
    ) -> Result<(), StoreError> {
        let Some(file) = FileRow::of(key) else {
            return Ok(());
        };
        let mut insert = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO faithfulness
             (path, size, modified_ns, weights, resize, method, class, settings, scores)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let stored = StoredScores {
            version: SCORES_VERSION,
            scores: *scores,
        };
        insert.execute(params![
            file.path,
            file.size,
            file.modified_ns,
            weights,
            mode_name(resize),
            map.method.name(),
            map.class as i64,
            map.settings,
            postcard::to_stdvec(&stored).expect("scores always serialise"),
        ])?;
        Ok(())
    }

    /// How many faithfulness rows the store holds.
    pub fn faithfulness_len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM faithfulness", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// How many results the store holds.
    pub fn len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

/// Which map of an analysed image faithfulness scores are of, and how they were measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapKey<'a> {
    pub method: CamMethod,
    pub class: usize,
    /// [`crate::model::faithfulness::Settings::key`].
    pub settings: &'a str,
}

#[derive(Serialize, Deserialize)]
struct StoredScores {
    version: u8,
    scores: Scores,
}

fn decode_scores(bytes: &[u8]) -> Option<Scores> {
    let s: StoredScores = postcard::from_bytes(bytes).ok()?;
    (s.version == SCORES_VERSION).then_some(s.scores)
}

/// Layout 1 to 2: the results table rebuilt with the method in its key, every row of layout
/// 1 kept as CAM's (the only method it stored), in one transaction. The layout is read again
/// inside it, so two processes opening an old store at once migrate it once.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let migrated = (|| {
        let layout: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if layout != 1 {
            return Ok(());
        }
        conn.execute_batch(&format!(
            "ALTER TABLE results RENAME TO results_v1;
             {RESULTS_TABLE};
             INSERT INTO results (path, size, modified_ns, weights, resize, method, truth, record)
                 SELECT path, size, modified_ns, weights, resize, 'cam', truth, record
                 FROM results_v1;
             DROP TABLE results_v1;
             PRAGMA user_version = 2;"
        ))
    })();
    match migrated {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn mode_name(mode: ResizeMode) -> &'static str {
    match mode {
        ResizeMode::Full => "full",
        ResizeMode::Squash => "squash",
        ResizeMode::Center => "center",
    }
}

/// Sorts SQLite's errors into "the file is bad" and "the place is not writable".
fn classify(e: rusqlite::Error) -> OpenError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            OpenError::Unusable(e.to_string())
        }
        _ => OpenError::Unwritable(e.to_string()),
    }
}

/// The record as stored: compact (CAMs in half precision, boxes in 16-bit pixels).
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u8,
    size: (u32, u32),
    input: (u32, u32),
    region: [f32; 4],
    elapsed_us: u64,
    /// (index, rank, probability) per class.
    top: Vec<(u16, u16, f32)>,
    cam_size: (u16, u16),
    cams: Vec<f16>,
    top1_box: Option<[u16; 4]>,
    truth: Option<(u16, Vec<Option<[u16; 4]>>)>,
}

fn pack(b: BBox) -> [u16; 4] {
    [b.x0, b.y0, b.x1, b.y1].map(|v| v.min(u32::from(u16::MAX)) as u16)
}

fn unpack(b: [u16; 4]) -> BBox {
    BBox {
        x0: b[0].into(),
        y0: b[1].into(),
        x1: b[2].into(),
        y1: b[3].into(),
    }
}

fn encode(record: &Record) -> Vec<u8> {
    let a = &record.analysis;
    let (cw, ch) = a.cams.first().map_or((0, 0), |g| (g.width, g.height));
    let stored = Stored {
        version: RECORD_VERSION,
        size: record.size,
        input: a.input,
        region: [a.region.x0, a.region.y0, a.region.x1, a.region.y1],
        elapsed_us: a.elapsed.as_micros() as u64,
        top: a
            .top
            .iter()
            .map(|p| (p.index as u16, p.rank as u16, p.prob))
            .collect(),
        cam_size: (cw as u16, ch as u16),
        cams: a
            .cams
            .iter()
            .flat_map(|g| g.values.iter().map(|&v| f16::from_f32(v)))
            .collect(),
        top1_box: record.top1_box.map(pack),
        truth: record.truth.as_ref().map(|t| {
            (
                t.class as u16,
                t.boxes.iter().map(|b| b.map(pack)).collect(),
            )
        }),
    };
    postcard::to_stdvec(&stored).expect("a record always serialises")
}

fn decode(bytes: &[u8]) -> Option<Record> {
    let s: Stored = postcard::from_bytes(bytes).ok()?;
    if s.version != RECORD_VERSION {
        return None;
    }
    let (cw, ch) = (usize::from(s.cam_size.0), usize::from(s.cam_size.1));
    if s.cams.len() != cw * ch * s.top.len() {
        return None;
    }
    let cams = s
        .cams
        .chunks(cw * ch)
        .map(|c| CamGrid {
            width: cw,
            height: ch,
            values: c.iter().map(|v| v.to_f32()).collect(),
        })
        .collect();
    let top = s
        .top
        .iter()
        .map(|&(index, rank, prob)| Prediction {
            rank: rank.into(),
            index: index.into(),
            label: labels::label(index.into()),
            prob,
        })
        .collect();
    Some(Record {
        size: s.size,
        analysis: Analysis {
            top,
            cams,
            input: s.input,
            region: Region {
                x0: s.region[0],
                y0: s.region[1],
                x1: s.region[2],
                y1: s.region[3],
            },
            elapsed: Duration::from_micros(s.elapsed_us),
        },
        top1_box: s.top1_box.map(unpack),
        truth: s.truth.map(|(class, boxes)| TruthRecord {
            class: class.into(),
            boxes: boxes.into_iter().map(|b| b.map(unpack)).collect(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            size: (451, 300),
            analysis: Analysis {
                top: vec![Prediction {
                    rank: 1,
                    index: 285,
                    label: "Egyptian cat".into(),
                    prob: 0.77,
                }],
                cams: vec![CamGrid {
                    width: 2,
                    height: 1,
                    values: vec![1.5, -0.25],
                }],
                input: (337, 224),
                region: Region {
                    x0: 0.0,
                    y0: 0.0,
                    x1: 451.0,
                    y1: 300.0,
                },
                elapsed: Duration::from_micros(31_000),
            },
            top1_box: Some(BBox {
                x0: 1,
                y0: 2,
                x1: 300,
                y1: 299,
            }),
            truth: Some(TruthRecord {
                class: 285,
                boxes: vec![
                    None,
                    Some(BBox {
                        x0: 0,
                        y0: 0,
                        x1: 9,
                        y1: 9,
                    }),
                ],
            }),
        }
    }

    #[test]
    fn a_record_comes_back_as_it_went_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let file = ImageKey {
            path: "/photos/chelsea.png".into(),
            size: 10,
            modified: Some(UNIX_EPOCH + Duration::from_nanos(5)),
        };
        let cam = CamMethod::Cam;
        assert_eq!(store.get(&file, "w", ResizeMode::Full, cam).unwrap(), None);
        store
            .put(&file, "w", ResizeMode::Full, cam, &record())
            .unwrap();
        assert_eq!(
            store.get(&file, "w", ResizeMode::Full, cam).unwrap(),
            Some(record())
        );
        // Another mode, other weights, another method or a changed file are other keys.
        assert_eq!(
            store.get(&file, "w", ResizeMode::Center, cam).unwrap(),
            None
        );
        assert_eq!(store.get(&file, "v", ResizeMode::Full, cam).unwrap(), None);
        let layer = CamMethod::LayerCam;
        assert_eq!(
            store.get(&file, "w", ResizeMode::Full, layer).unwrap(),
            None
        );
        let touched = ImageKey {
            modified: Some(UNIX_EPOCH + Duration::from_nanos(6)),
            ..file.clone()
        };
        assert_eq!(
            store.get(&touched, "w", ResizeMode::Full, cam).unwrap(),
            None
        );
        assert_eq!(store.len().unwrap(), 1);
        // Two methods' records of one image live side by side.
        let mut other = record();
        other.top1_box = None;
        store
            .put(&file, "w", ResizeMode::Full, layer, &other)
            .unwrap();
        assert_eq!(
            store.get(&file, "w", ResizeMode::Full, layer).unwrap(),
            Some(other)
        );
        assert_eq!(
            store.get(&file, "w", ResizeMode::Full, cam).unwrap(),
            Some(record())
        );
        assert_eq!(store.len().unwrap(), 2);
    }

    /// A store of layout 1 (no method column), written with that layout's own SQL: opened by
    /// this camview, its rows are CAM's results and nothing else's.
    #[test]
    fn a_store_of_layout_1_keeps_its_results_as_cams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        let file = ImageKey {
            path: "/photos/chelsea.png".into(),
            size: 10,
            modified: Some(UNIX_EPOCH + Duration::from_nanos(5)),
        };
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE weights (
                     path TEXT NOT NULL, size INTEGER NOT NULL, modified_ns INTEGER NOT NULL,
                     sha256 TEXT NOT NULL,
                     PRIMARY KEY (path, size, modified_ns));
                 CREATE TABLE results (
                     path TEXT NOT NULL, size INTEGER NOT NULL, modified_ns INTEGER NOT NULL,
                     weights TEXT NOT NULL, resize TEXT NOT NULL,
                     truth INTEGER,
                     record BLOB NOT NULL,
                     UNIQUE (path, size, modified_ns, weights, resize));
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO results VALUES ('/photos/chelsea.png', 10, 5, 'w', 'full', 285, ?1)",
                params![encode(&record())],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let full = ResizeMode::Full;
        assert_eq!(
            store.get(&file, "w", full, CamMethod::Cam).unwrap(),
            Some(record())
        );
        for method in [CamMethod::GradCamPlusPlus, CamMethod::EigenCam] {
            assert_eq!(store.get(&file, "w", full, method).unwrap(), None);
        }
        // The new key takes a second method beside the old row.
        store
            .put(&file, "w", full, CamMethod::LayerCam, &record())
            .unwrap();
        assert_eq!(store.len().unwrap(), 2);
        let layout: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(layout, SCHEMA_VERSION);
        drop(store);
        // Opened again, nothing is migrated twice.
        let again = Store::open(&path).unwrap();
        assert_eq!(again.len().unwrap(), 2);
    }

    fn scores() -> Scores {
        Scores {
            confidence: 0.77,
            cam_mult_change: -0.5,
            road_most_relevant_first: [-0.1, -0.2, -0.3, -0.4],
            road_least_relevant_first: [0.01, 0.02, 0.03, -0.04],
            deletion_auc: 0.125,
            insertion_auc: 0.625,
        }
    }

    #[test]
    fn faithfulness_comes_back_under_its_whole_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let file = ImageKey {
            path: "/photos/chelsea.png".into(),
            size: 10,
            modified: Some(UNIX_EPOCH + Duration::from_nanos(5)),
        };
        let map = MapKey {
            method: CamMethod::Cam,
            class: 285,
            settings: "step=224",
        };
        assert_eq!(
            store
                .get_faithfulness(&file, "w", ResizeMode::Full, map)
                .unwrap(),
            None
        );
        store
            .put_faithfulness(&file, "w", ResizeMode::Full, map, &scores())
            .unwrap();
        assert_eq!(
            store
                .get_faithfulness(&file, "w", ResizeMode::Full, map)
                .unwrap(),
            Some(scores())
        );
        // Every part of the key tells scores apart.
        let others = [
            MapKey {
                method: CamMethod::LayerCam,
                ..map
            },
            MapKey { class: 281, ..map },
            MapKey {
                settings: "step=448",
                ..map
            },
        ];
        for other in others {
            assert_eq!(
                store
                    .get_faithfulness(&file, "w", ResizeMode::Full, other)
                    .unwrap(),
                None,
                "{other:?}"
            );
        }
        assert_eq!(
            store
                .get_faithfulness(&file, "v", ResizeMode::Full, map)
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .get_faithfulness(&file, "w", ResizeMode::Center, map)
                .unwrap(),
            None
        );
        let touched = ImageKey {
            modified: Some(UNIX_EPOCH + Duration::from_nanos(6)),
            ..file.clone()
        };
        assert_eq!(
            store
                .get_faithfulness(&touched, "w", ResizeMode::Full, map)
                .unwrap(),
            None
        );
        // Written again: replaced, not added.
        let better = Scores {
            deletion_auc: 0.0625,
            ..scores()
        };
        store
            .put_faithfulness(&file, "w", ResizeMode::Full, map, &better)
            .unwrap();
        assert_eq!(store.faithfulness_len().unwrap(), 1);
        assert_eq!(
            store
                .get_faithfulness(&file, "w", ResizeMode::Full, map)
                .unwrap(),
            Some(better)
        );
        assert_eq!(store.len().unwrap(), 0, "no analysis was stored");
    }

    /// The layouts camview wrote before faithfulness was stored, as it created them: 1
    /// (results without a method) and 2 (results keyed by method), each with one result.
    fn old_layouts(file: &ImageKey) -> [(i64, String); 2] {
        let row = FileRow::of(file).unwrap();
        let key = format!("'{}', {}, {}", row.path, row.size, row.modified_ns);
        let weights = "CREATE TABLE weights (
             path TEXT NOT NULL, size INTEGER NOT NULL, modified_ns INTEGER NOT NULL,
             sha256 TEXT NOT NULL,
             PRIMARY KEY (path, size, modified_ns));
             INSERT INTO weights VALUES ('/m/w.safetensors', 1, 2, 'abc');";
        [
            (
                1,
                format!(
                    "{weights}
                     CREATE TABLE results (
                         path TEXT NOT NULL, size INTEGER NOT NULL, modified_ns INTEGER NOT NULL,
                         weights TEXT NOT NULL, resize TEXT NOT NULL,
                         truth INTEGER,
                         record BLOB NOT NULL,
                         UNIQUE (path, size, modified_ns, weights, resize));
                     INSERT INTO results VALUES ({key}, 'w', 'full', 285, ?1);
                     PRAGMA user_version = 1;"
                ),
            ),
            (
                2,
                format!(
                    "{weights}
                     {RESULTS_TABLE};
                     INSERT INTO results VALUES ({key}, 'w', 'full', 'cam', 285, ?1);
                     PRAGMA user_version = 2;"
                ),
            ),
        ]
    }

    #[test]
    fn older_layouts_keep_their_results_and_gain_faithfulness() {
        let dir = tempfile::tempdir().unwrap();
        let file = ImageKey {
            path: "/photos/chelsea.png".into(),
            size: 10,
            modified: Some(UNIX_EPOCH + Duration::from_nanos(5)),
        };
        for (layout, sql) in old_layouts(&file) {
            let path = dir.path().join(format!("layout-{layout}.sqlite"));
            {
                let old = Connection::open(&path).unwrap();
                // The record is a blob: bound, as the statements cannot spell it.
                let sql = sql.replace("?1", "x'00'");
                old.execute_batch(&sql).unwrap();
                old.execute("UPDATE results SET record = ?1", params![encode(&record())])
                    .unwrap();
            }
            let (store, note) = open_or_recover(&path);
            assert_eq!(note, None, "layout {layout}: migrated, not set aside");
            let store = store.unwrap();
            assert_eq!(
                store
                    .get(&file, "w", ResizeMode::Full, CamMethod::Cam)
                    .unwrap(),
                Some(record()),
                "layout {layout}"
            );
            let now: i64 = store
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(now, SCHEMA_VERSION);
            let weights: String = store
                .conn
                .query_row("SELECT sha256 FROM weights", [], |r| r.get(0))
                .unwrap();
            assert_eq!(weights, "abc");
            let map = MapKey {
                method: CamMethod::Cam,
                class: 285,
                settings: "s",
            };
            store
                .put_faithfulness(&file, "w", ResizeMode::Full, map, &scores())
                .unwrap();
            drop(store);
            // Opened again: the new layout as it is.
            let store = Store::open(&path).unwrap();
            assert_eq!(store.len().unwrap(), 1);
            assert_eq!(
                store
                    .get_faithfulness(&file, "w", ResizeMode::Full, map)
                    .unwrap(),
                Some(scores()),
                "layout {layout}"
            );
        }
    }

    #[test]
    fn a_store_of_a_later_layout_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TABLE t (x); PRAGMA user_version = {};",
                SCHEMA_VERSION + 1
            ))
            .unwrap();
        assert!(matches!(Store::open(&path), Err(OpenError::Unusable(_))));
    }

    #[test]
    fn a_file_that_is_no_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (store, note) = open_or_recover(&path);
        let store = store.expect("a fresh store");
        assert!(store.is_empty().unwrap());
        let note = note.unwrap();
        assert!(note.contains("moved it to"), "{note}");
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("results.sqlite.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "the bad file is kept for the user");
    }

    #[test]
    fn an_unwritable_place_means_no_store_and_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let (store, note) = open_or_recover(&blocker.join("results.sqlite"));
        assert!(store.is_none());
        assert!(note.unwrap().contains("results are not kept"));
    }
}
