-- The part of LIMS that slapp reads: the tables the seed's example queries join.
-- Only the demo and the tests create these; a real LIMS already has them.

CREATE TABLE IF NOT EXISTS projects (
    id   bigint PRIMARY KEY,
    code text NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS donors (
    id   bigint PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE IF NOT EXISTS specimens (
    id       bigint PRIMARY KEY,
    donor_id bigint NOT NULL REFERENCES donors (id),
    name     text NOT NULL
);
CREATE TABLE IF NOT EXISTS genotype_types (
    id   bigint PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS genotypes (
    id               bigint PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    genotype_type_id bigint NOT NULL REFERENCES genotype_types (id)
);
CREATE TABLE IF NOT EXISTS donors_genotypes (
    donor_id    bigint NOT NULL REFERENCES donors (id),
    genotype_id bigint NOT NULL REFERENCES genotypes (id),
    PRIMARY KEY (donor_id, genotype_id)
);
CREATE TABLE IF NOT EXISTS imaging_depths (
    id    bigint PRIMARY KEY,
    depth int NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS ophys_sessions (
    id          bigint PRIMARY KEY,
    project_id  bigint NOT NULL REFERENCES projects (id),
    specimen_id bigint NOT NULL REFERENCES specimens (id)
);
CREATE TABLE IF NOT EXISTS ophys_experiments (
    id                     bigint PRIMARY KEY,
    ophys_session_id       bigint NOT NULL REFERENCES ophys_sessions (id),
    imaging_depth_id       bigint NOT NULL REFERENCES imaging_depths (id),
    workflow_state         text NOT NULL,
    movie_number_of_frames int,
    storage_directory      text
);
