"""One firewall instance: datapath + core + state table, with a control socket."""
