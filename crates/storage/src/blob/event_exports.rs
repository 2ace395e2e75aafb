//! Archived audit events: one gzipped JSON-lines file per UTC day,
//! `EventExports/{yyyy}/{mm}/{dd}.jsonl.gz`. A day's file is written whole under the node's
//! in-progress folder, synced, and renamed into place, so a file in place is always complete.
//! A day archived again **merges** into what is there: the new file starts with every event the
//! old one holds, and an event already there (an interrupted archive redone) is not written
//! twice — an archive never loses what an earlier one kept.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use cuttle_core::{civil_date, EventRecord};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::SharedStore;
use crate::{Error, Result};

const EVENT_EXPORTS: &str = "EventExports";

/// A day's archive being written.
pub struct DayExport {
    temp: PathBuf,
    dest: PathBuf,
    out: Option<GzEncoder<BufWriter<std::fs::File>>>,
    /// Events written by this archive (not those it kept from an earlier one).
    pub events: u64,
    /// Ids of the events already in the file (kept from an earlier archive of the day).
    seen: std::collections::HashSet<String>,
}

impl DayExport {
    /// Appends one event as a JSON line, unless the day's archive holds it already.
    pub fn write(&mut self, e: &EventRecord) -> Result<()> {
        if self.seen.contains(&e.id) {
            return Ok(());
        }
        let line = serde_json::to_string(e)
            .map_err(|err| Error::Invalid(format!("event {}: {err}", e.id)))?;
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::Invalid("export finished".into()))?;
        out.write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|err| Error::io("write event export", &self.temp, err))?;
        self.events += 1;
        Ok(())
    }

    /// Completes the file, syncs it and puts it in place; where it is.
    pub fn finish(mut self) -> Result<PathBuf> {
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::Invalid("export finished".into()))?;
        let file = out
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(|e| Error::io("write event export", &self.temp, e))?;
        file.sync_all()
            .map_err(|e| Error::io("sync event export", &self.temp, e))?;
        if let Some(dir) = self.dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create folder", dir, e))?;
        }
        std::fs::rename(&self.temp, &self.dest)
            .map_err(|e| Error::io("put event export in place", &self.dest, e))?;
        if let Some(Ok(d)) = self.dest.parent().map(std::fs::File::open) {
            let _ = d.sync_all();
        }
        Ok(self.dest.clone())
    }
}

impl Drop for DayExport {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl SharedStore {
    /// Where the archive of day `day` (days since 1970-01-01, UTC) is kept.
    pub fn event_export_path(&self, day: i64) -> PathBuf {
        let (y, m, d) = civil_date(day);
        self.root
            .join(EVENT_EXPORTS)
            .join(format!("{y:04}"))
            .join(format!("{m:02}"))
            .join(format!("{d:02}.jsonl.gz"))
    }

    /// Starts writing day `day`'s archive on `node`, holding every event an earlier archive of
    /// the day kept.
    pub fn start_day_export(&self, node: &str, day: i64) -> Result<DayExport> {
        let temp = self.temp_in(EVENT_EXPORTS, node)?;
        let file =
            std::fs::File::create(&temp).map_err(|e| Error::io("create event export", &temp, e))?;
        let mut x = DayExport {
            dest: self.event_export_path(day),
            out: Some(GzEncoder::new(
                BufWriter::with_capacity(1 << 16, file),
                flate2::Compression::default(),
            )),
            temp,
            events: 0,
            seen: std::collections::HashSet::new(),
        };
        let mut kept: Result<()> = Ok(());
        self.read_day_export(day, |v| {
            let id = v.get("id").and_then(|i| i.as_str()).map(str::to_owned);
            let line = v.to_string();
            let written = match x.out.as_mut() {
                Some(out) => out
                    .write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|err| Error::io("write event export", &x.temp, err)),
                None => Ok(()),
            };
            match (written, id) {
                (Ok(()), Some(id)) => {
                    x.seen.insert(id);
                    true
                }
                (Ok(()), None) => true,
                (Err(e), _) => {
                    kept = Err(e);
                    false
                }
            }
        })?;
        kept?;
        Ok(x)
    }

    /// The days that have an archive, oldest first.
    pub fn archived_days(&self) -> Result<Vec<i64>> {
        let root = self.root.join(EVENT_EXPORTS);
        let mut days = Vec::new();
        let list = |dir: &std::path::Path| -> Result<Vec<(String, PathBuf)>> {
            match std::fs::read_dir(dir) {
                Ok(entries) => Ok(entries
                    .flatten()
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                    .collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Error::io("list event exports", dir, e)),
            }
        };
        for (y, ydir) in list(&root)? {
            let Ok(y) = y.parse::<i64>() else { continue };
            for (m, mdir) in list(&ydir)? {
                let Ok(m) = m.parse::<u32>() else { continue };
                for (d, _) in list(&mdir)? {
                    let Some(Ok(d)) = d.strip_suffix(".jsonl.gz").map(str::parse::<u32>) else {
                        continue;
                    };
                    days.push(cuttle_core::days_from_civil(y, m, d));
                }
            }
        }
        days.sort_unstable();
        Ok(days)
    }

    /// The archived events of day `day`, in order, handed one at a time to `each` (which may
    /// stop the reading by returning false); nothing when the day has no archive.
    pub fn read_day_export(
        &self,
        day: i64,
        mut each: impl FnMut(serde_json::Value) -> bool,
    ) -> Result<()> {
        let path = self.event_export_path(day);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("open event export", &path, e)),
        };
        for (i, line) in BufReader::new(GzDecoder::new(file)).lines().enumerate() {
            let line = line.map_err(|e| Error::io("read event export", &path, e))?;
            let v = serde_json::from_str(&line).map_err(|e| {
                Error::Database(format!("{} line {}: not JSON: {e}", path.display(), i + 1))
            })?;
            if !each(v) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_dir;
    use super::*;

    fn event(n: i64) -> EventRecord {
        EventRecord {
            id: format!("Events-{n}"),
            occurred_at: 20_000 * cuttle_core::DAY_MS + n,
            actor: "ci".into(),
            action: "task.create".into(),
            target: "ServerTasks-1".into(),
            client_address: "127.0.0.1".into(),
            details: serde_json::json!({"n": n}),
        }
    }

    #[test]
    fn a_day_is_archived_whole_or_not_at_all() {
        let dir = temp_dir("exports");
        let store = SharedStore::open(&dir).unwrap();
        assert_eq!(
            store.event_export_path(20_000).strip_prefix(&dir).unwrap(),
            std::path::Path::new("EventExports/2024/10/04.jsonl.gz")
        );
        // Dropped before it finished: nothing in place, nothing left in progress.
        let mut half = store.start_day_export("n1", 20_000).unwrap();
        half.write(&event(1)).unwrap();
        drop(half);
        assert!(!store.event_export_path(20_000).exists());
        assert_eq!(store.clear_in_progress("n1").unwrap(), 0);
        // Written twice (an archive redone): each event once.
        for _ in 0..2 {
            let mut x = store.start_day_export("n1", 20_000).unwrap();
            for n in 1..=3 {
                x.write(&event(n)).unwrap();
            }
            x.finish().unwrap();
        }
        let read_ids = || {
            let mut read = Vec::new();
            store
                .read_day_export(20_000, |v| {
                    read.push(v["id"].as_str().unwrap().to_owned());
                    true
                })
                .unwrap();
            read
        };
        assert_eq!(read_ids(), ["Events-1", "Events-2", "Events-3"]);
        // Archived again with other events of the day: merged, nothing lost.
        let mut x = store.start_day_export("n1", 20_000).unwrap();
        for n in [3, 4] {
            x.write(&event(n)).unwrap();
        }
        assert_eq!(x.events, 1, "only the new one is written");
        x.finish().unwrap();
        assert_eq!(read_ids(), ["Events-1", "Events-2", "Events-3", "Events-4"]);
        store
            .read_day_export(19_999, |_| panic!("no such day"))
            .unwrap();
        assert_eq!(store.archived_days().unwrap(), [20_000]);
    }
}
