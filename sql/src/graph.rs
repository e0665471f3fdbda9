//! The pipeline as a graph: which streams each query reads (with positions, for errors),
//! the order nodes run in (a cycle is an error), and readers of dead letters last.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Query, Visit, Visitor};
use datafusion::sql::sqlparser::tokenizer::Span;
use weir_engine::options::edit_distance;

use crate::error::SqlError;
use crate::parser::{PipelineFile, StreamStatement};
use crate::windows::{is_window_function, window_inputs};

/// Names of the CTEs defined anywhere in `query`.
fn cte_names(query: &Query) -> HashSet<String> {
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for cte in &with.cte_tables {
                    self.0.insert(cte.alias.name.value.to_ascii_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Ctes(HashSet::new());
    let _ = query.visit(&mut v);
    v.0
}

/// Moves the nodes that read dead letters (directly or through other nodes) after all the
/// others, keeping both groups in dependency order: windowed nodes add late rows to the dead
/// letters while they run, so a reader sees all of the epoch's dead letters.
pub(crate) fn after_dead_letter_writers(
    order: Vec<usize>,
    streams: &[(&PipelineFile, &StreamStatement)],
    inputs: &HashMap<String, Vec<(String, Span)>>,
) -> Vec<usize> {
    let mut readers: HashSet<&str> = HashSet::new();
    for &i in &order {
        let name = streams[i].1.name.as_str();
        let reads_dead_letters = inputs[name]
            .iter()
            .any(|(n, _)| n.starts_with("_dead_letter.") || readers.contains(n.as_str()));
        if reads_dead_letters {
            readers.insert(name);
        }
    }
    let (late, early): (Vec<usize>, Vec<usize>) = order
        .into_iter()
        .partition(|&i| readers.contains(streams[i].1.name.as_str()));
    early.into_iter().chain(late).collect()
}

/// Orders streams so every stream comes after the streams it reads; a cycle is an error at the
/// reference that closes it.
pub(crate) fn dependency_order(
    streams: &[(&PipelineFile, &StreamStatement)],
    inputs: &HashMap<String, Vec<(String, Span)>>,
) -> Result<Vec<usize>, SqlError> {
    let index: BTreeMap<&str, usize> = streams
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (s.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = streams
        .iter()
        .map(|(_, s)| {
            inputs[&s.name]
                .iter()
                .filter_map(|(n, _)| index.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    // Depth-first search; colours: 0 new, 1 in progress, 2 done.
    let mut colour = vec![0u8; streams.len()];
    let mut order = Vec::new();
    let mut path: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        colour: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match colour[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            _ => {}
        }
        colour[i] = 1;
        path.push(i);
        for &d in &deps[i] {
            visit(d, deps, colour, order, path)?;
        }
        path.pop();
        colour[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..streams.len() {
        if let Err(cycle) = visit(i, &deps, &mut colour, &mut order, &mut path) {
            // The cycle is [a, b, ..., a] where each reads the next.
            let names: Vec<&str> = cycle.iter().map(|&c| streams[c].1.name.as_str()).collect();
            let (file, first) = streams[cycle[0]];
            let next = &streams[cycle[1]].1.name;
            let span = inputs[&first.name]
                .iter()
                .find(|(n, _)| n == next)
                .map(|(_, s)| *s)
                .unwrap_or(first.name_span);
            return Err(file
                .error(span, format!("cycle between streams: {}", names.join(" reads ")))
                .with_hint("a pipeline is a DAG: make one of these read a source or an upstream table instead"));
        }
    }
    Ok(order)
}

/// The streams `st`'s query reads (relations and window-function inputs), with positions;
/// every unknown name (that no WITH query of the same name shadows) is an error with the
/// closest declared name, and so is a query that reads itself.
pub(crate) fn stream_reads(
    file: &PipelineFile,
    st: &StreamStatement,
    known: &HashSet<String>,
) -> Result<Vec<(String, Span)>, Vec<SqlError>> {
    let mut errors = Vec::new();
    let ctes = cte_names(&st.query);
    let mut refs = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_relations(&*st.query, |rel| {
        let name = crate::parser::object_name_to_string(rel);
        if is_window_function(&name) {
            return ControlFlow::<()>::Continue(());
        }
        let span = rel
            .0
            .first()
            .and_then(|p| p.as_ident())
            .map(|i| i.span)
            .unwrap_or(st.name_span);
        // A WITH query of the same name shadows a stream of the pipeline.
        let shadowed = ctes.contains(&name);
        if !shadowed && known.contains(&name) {
            refs.push((name, span));
        } else if !shadowed {
            let mut e = file.error(span, format!("unknown source, table or view `{name}`"));
            let mut names: Vec<&String> = known.iter().collect();
            names.sort();
            let close = names
                .iter()
                .filter(|k| edit_distance(k, &name) <= 2)
                .min_by_key(|k| edit_distance(k, &name));
            let declared = names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            e = e.with_hint(match close {
                Some(k) => format!("did you mean `{k}`? Declared: {declared}"),
                None => format!(
                    "declare it with CREATE SOURCE / CREATE TABLE / CREATE VIEW; declared: {declared}"
                ),
            });
            errors.push(e);
        }
        ControlFlow::<()>::Continue(())
    });
    for (name, span) in window_inputs(&st.query) {
        let shadowed = ctes.contains(&name);
        if !shadowed && known.contains(&name) {
            refs.push((name, span));
        } else if !shadowed {
            errors.push(file.error(span, format!("unknown source, table or view `{name}` in a window function"))
                .with_hint("the first argument of TUMBLE / HOP names a source, table, view or WITH query of this pipeline"));
        }
    }
    if refs.iter().any(|(r, _)| r == &st.name) {
        let span = refs
            .iter()
            .find(|(r, _)| r == &st.name)
            .map(|(_, s)| *s)
            .unwrap_or(st.name_span);
        errors.push(
            file.error(span, format!("`{}` reads itself", st.name))
                .with_hint("a streaming table cannot read its own output; read its inputs instead"),
        );
    }
    if errors.is_empty() {
        Ok(refs)
    } else {
        Err(errors)
    }
}
