/**
 * Enrichment without the network (docs/enrichment.md).
 *
 * `user_agent_classes` holds what a user-agent parser made of each distinct user agent, keyed
 * by the MD5 of the string (a user agent can be longer than a B-tree entry may be, and the
 * cache keeps no copy of the string itself). It is a cache shared by every tenant: the export
 * that first asks for the columns parses the strings nobody parsed with the current parser
 * version, and every export joins it.
 *
 * `ip_country_ranges` holds the IP ranges of a country database shipped in an npm package,
 * `country_regions` the UN M49 region of each country, and `ip_location_source` whether the
 * operator enabled IP location and which package version the ranges came from. They are
 * loaded at start when the operator enables it (FERRY_IP_LOCATION=on).
 */
export const up = /* sql */ `
CREATE TABLE user_agent_classes (
  user_agent_hash text PRIMARY KEY,
  device_class text,
  browser text,
  os text,
  parsed_with_version text NOT NULL,
  parsed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ip_country_ranges (
  range_start inet NOT NULL,
  range_end inet NOT NULL,
  country text NOT NULL
);
CREATE INDEX ip_country_ranges_start ON ip_country_ranges (range_start);

CREATE TABLE country_regions (
  country text PRIMARY KEY,
  region text NOT NULL
);

CREATE TABLE ip_location_source (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  enabled boolean NOT NULL,
  source text,
  loaded_at timestamptz
);

-- The country (ISO 3166-1 alpha-2) of an IP address from the loaded ranges; NULL for text
-- that is not an address, or an address no range holds. The ranges do not overlap, so the
-- range starting last at or before the address is the only one that can hold it.
CREATE OR REPLACE FUNCTION ferry_ip_country(ip text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
  address inet;
  hit record;
BEGIN
  IF ip IS NULL OR ip !~ '^[0-9A-Fa-f:.]+(/[0-9]+)?$' THEN
    RETURN NULL;
  END IF;
  -- pg_input_is_valid would avoid the exception block, but PostgreSQL before 16 lacks it.
  BEGIN
    address := host(ip::inet)::inet;
  EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
  END;
  SELECT r.range_end, r.country INTO hit
  FROM ip_country_ranges r
  WHERE r.range_start <= address
  ORDER BY r.range_start DESC
  LIMIT 1;
  IF NOT FOUND OR hit.range_end < address THEN
    RETURN NULL;
  END IF;
  RETURN hit.country;
END
$$;

-- The UN M49 region of an IP address's country.
CREATE OR REPLACE FUNCTION ferry_ip_region(ip text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT g.region FROM country_regions g WHERE g.country = ferry_ip_country(ip)
$$;
`;
