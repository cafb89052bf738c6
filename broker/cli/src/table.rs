//! Plain-text tables for listings, in the style of `rpk` and `kubectl`: an upper-case header row,
//! left-aligned columns separated by two spaces, no borders.

/// Renders `header` and `rows` as aligned columns, one line each, with a trailing newline.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let rows = [
            ["orders".to_owned(), "12".to_owned(), "3".to_owned()],
            ["a".to_owned(), "1".to_owned(), "1".to_owned()],
        ];
        assert_eq!(
            render(["NAME", "PARTITIONS", "REPLICATION"], &rows),
            "NAME    PARTITIONS  REPLICATION\n\
             orders  12          3\n\
             a       1           1\n"
        );
    }

    #[test]
    fn empty_table_is_just_the_header() {
        assert_eq!(render(["NAME", "ID"], &[]), "NAME  ID\n");
    }
}
