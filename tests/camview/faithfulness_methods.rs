//! Faithfulness beside the methods: `eval --methods … --faithfulness` as columns of the one
//! methods table and of `--csv` (each value the one `--json` gives), and `cam
//! --faithfulness` reading the result store as `eval` does. The tiny timm folder
//! `timm_resnetd` keeps it cheap: its 64 × 64 input (`--resize center`) makes the
//! perturbed inputs and ROAD's imputation small.

use serde_json::Value;

use crate::common::break_keeping_identity;
use crate::score_cam::{arg, camview_with, dataset, json_lines, text};

fn camview(args: &[&str]) -> std::process::Output {
    let model = crate::common::root().join("tests/fixtures/models/timm_resnetd");
    camview_with(&model, args)
}

/// The CSV's rows as maps from column name to cell.
fn csv_rows(out: &std::process::Output) -> Vec<std::collections::HashMap<String, String>> {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(&out.stdout[..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .cloned()
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// A cell and a JSON number, both read as the f32 they were written from.
fn same_f32(what: &str, cell: &str, json: &Value) {
    let from_csv: f32 = cell.parse().unwrap_or_else(|_| panic!("{what}: `{cell}`"));
    let from_json = json.as_f64().unwrap_or_else(|| panic!("{what}: {json}")) as f32;
    assert_eq!(from_csv, from_json, "{what}");
}

#[test]
fn eval_faithfulness_by_method_in_the_table_and_the_csv() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dataset(&data, 2, 3);
    let store = dir.path().join("store.sqlite");
    let common = [
        "eval",
        arg(&data),
        "--methods",
        "cam,gradcam++",
        "--faithfulness",
        "--deletion-step",
        "1024",
        "--resize",
        "center",
        "--store",
        arg(&store),
    ];
    let json = json_lines(&camview(&[&common[..], &["--json"]].concat()));
    let (images, summary) = json.split_at(json.len() - 1);
    let summary = &summary[0]["summary"];

    // --csv, from the store: every faithfulness value is the one --json gives.
    let out = camview(&[&common[..], &["--csv"]].concat());
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr
            .matches("all 2 faithfulness results from the store")
            .count(),
        2,
        "{stderr}"
    );
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 2);
    for (row, image) in rows.iter().zip(images) {
        assert_eq!(row["path"], image["path"].as_str().unwrap());
        // Unsuffixed: the first method's, as `iou` is; then each method's.
        let by = [
            ("", &image["faithfulness"]),
            ("_cam", &image["methods"]["cam"]["faithfulness"]),
            ("_gradcam++", &image["methods"]["gradcam++"]["faithfulness"]),
        ];
        for (suffix, scores) in by {
            assert_eq!(
                row[&format!("faithfulness_class{suffix}")],
                scores["class"].to_string()
            );
            assert_eq!(
                row[&format!("increased{suffix}")],
                scores["increased"].to_string()
            );
            assert_eq!(row[&format!("faithfulness_error{suffix}")], "");
            for (column, key) in [
                ("confidence", "confidence"),
                ("confidence_change", "cam_mult_change"),
                ("drop", "drop"),
                ("deletion_auc", "deletion_auc"),
                ("insertion_auc", "insertion_auc"),
                ("road_combined", "road_combined"),
            ] {
                let column = format!("{column}{suffix}");
                same_f32(&column, &row[&column], &scores[key]);
            }
            for (p, percent) in ["20", "40", "60", "80"].into_iter().enumerate() {
                for (order, key) in [
                    ("morf", "road_most_relevant_first"),
                    ("lerf", "road_least_relevant_first"),
                ] {
                    let column = format!("road_{order}_{percent}{suffix}");
                    same_f32(&column, &row[&column], &scores[key][p]);
                }
            }
        }
        assert_ne!(
            row["deletion_auc_cam"], row["deletion_auc_gradcam++"],
            "two methods' maps, two scores"
        );
    }

    // The report: one table, a row a method with its means beside the localisation columns,
    // within 120 columns; ROAD by percentile below it.
    let out = camview(&common);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("by method"))
        .take_while(|l| !l.starts_with("ROAD by"))
        .collect();
    assert!(table[0].contains("faithfulness over 2 images"), "{report}");
    for line in &table {
        assert!(line.chars().count() <= 120, "too wide: {line}");
    }
    let header: Vec<&str> = table[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "method", "del↓", "ins↑", "drop↓", "incr↑", "MoRF↓", "LeRF↑", "ROAD↑"
        ]
    );
    for m in ["cam", "gradcam++"] {
        let means = &summary["methods"][m]["faithfulness"]["means"];
        let f = |key: &str| means[key].as_f64().unwrap();
        let want = [
            m.to_string(),
            format!("{:.3}", f("deletion_auc")),
            format!("{:.3}", f("insertion_auc")),
            format!("{:.1}", f("average_drop") * 100.0),
            "%".into(),
            format!("{:.1}", f("increase_in_confidence") * 100.0),
            "%".into(),
            format!("{:+.3}", f("road_most_relevant_first_mean")),
            format!("{:+.3}", f("road_least_relevant_first_mean")),
            format!("{:+.3}", f("road_combined")),
        ];
        let row = table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(m))
            .unwrap_or_else(|| panic!("no row for {m}:\n{report}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, want, "{report}");
        let road = report
            .lines()
            .skip_while(|l| !l.starts_with("ROAD by"))
            .find(|l| l.split_whitespace().next() == Some(m))
            .unwrap();
        let cells: Vec<String> = road.split_whitespace().skip(1).map(String::from).collect();
        let want: Vec<String> = ["road_most_relevant_first", "road_least_relevant_first"]
            .iter()
            .flat_map(|k| (0..4).map(move |p| format!("{:+.3}", means[*k][p].as_f64().unwrap())))
            .collect();
        assert_eq!(cells, want, "{report}");
    }
}

/// `cam --faithfulness` keeps its scores in `eval`'s store: a second run reads them (the
/// photo broken by then, size and time kept) and prints the same JSON; `--no-store` measures
/// afresh.
#[test]
fn cam_faithfulness_reads_the_store_on_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let items = dataset(&data, 1, 3);
    let photo = arg(&items[0].0);
    let store = dir.path().join("store.sqlite");
    let args = [
        "cam",
        photo,
        "--faithfulness",
        "--json",
        "--deletion-step",
        "1024",
        "--resize",
        "center",
        "--store",
        arg(&store),
    ];
    let first_out = camview(&args);
    let first = json_lines(&first_out);
    assert!(
        !text(&first_out.stderr).contains("from the store"),
        "{}",
        text(&first_out.stderr)
    );
    let rows: i64 = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM faithfulness", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);

    // --no-store measures afresh, to the same numbers.
    let unkept = camview(
        &args
            .iter()
            .copied()
            .filter(|a| *a != "--store" && *a != arg(&store))
            .chain(["--no-store"])
            .collect::<Vec<_>>(),
    );
    assert!(!text(&unkept.stderr).contains("from the store"));
    assert_eq!(json_lines(&unkept), first);

    break_keeping_identity(&items[0].0);
    let second_out = camview(&args);
    let second = json_lines(&second_out);
    let stderr = text(&second_out.stderr);
    assert!(stderr.contains("faithfulness from the store"), "{stderr}");
    assert_eq!(second, first);
}
