raise SystemExit("error: the importer is not in this build yet")
