-- Room on each page for the poll claim's new row versions.
ALTER TABLE enrichments SET (fillfactor = 50);
